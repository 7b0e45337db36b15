module example.invalid/ringbroker/bindings/go

go 1.24
