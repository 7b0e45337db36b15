module example.invalid/ringbroker/examples/go

go 1.24

require example.invalid/ringbroker/bindings/go v0.0.0

replace example.invalid/ringbroker/bindings/go => ../../bindings/go
