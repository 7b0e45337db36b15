package ringbroker

// #include <stdlib.h>
// #include "ringbroker.h"
import "C"

import (
	"strings"
	"unsafe"
)

// arena is one C allocation that holds a batch's structs, strings and payloads for
// the duration of one call: the library copies everything before it returns, and
// no Go pointer is ever stored in C memory (the cgo rules), at the price of one
// copy of the batch.
type arena struct {
	base unsafe.Pointer
	size uintptr
	off  uintptr
}

// arenaAlign is every allocation's alignment (the structs' largest field).
const arenaAlign = 8

func alignUp(n uintptr) uintptr { return (n + arenaAlign - 1) &^ (arenaAlign - 1) }

// arenaSize counts the room a batch needs, mirroring the arena's allocations.
type arenaSize uintptr

func (s *arenaSize) add(n uintptr)  { *s += arenaSize(alignUp(n)) }
func (s *arenaSize) str(v string)   { s.add(uintptr(len(v)) + 1) }
func (s *arenaSize) bytes(v []byte) { s.add(uintptr(len(v))) }
func (s *arenaSize) headers(h []Header) {
	s.add(uintptr(len(h)) * C.sizeof_ringbroker_header)
	for _, x := range h {
		s.str(x.Name)
		s.bytes(x.Value)
	}
}

func newArena(size arenaSize) *arena {
	n := uintptr(size)
	if n == 0 {
		n = arenaAlign
	}
	base := C.malloc(C.size_t(n))
	if base == nil {
		panic("ringbroker: out of memory for a batch")
	}
	return &arena{base: base, size: n}
}

func (a *arena) free() { C.free(a.base) }

// alloc returns n zeroed bytes of the arena.
func (a *arena) alloc(n uintptr) unsafe.Pointer {
	n = alignUp(n)
	if a.off+n > a.size {
		panic("ringbroker: batch arena overflow (size mis-counted)")
	}
	p := unsafe.Add(a.base, a.off)
	clear(unsafe.Slice((*byte)(p), n))
	a.off += n
	return p
}

// str copies v with a NUL terminator; ErrInvalidArgument if v holds a NUL.
func (a *arena) str(what, v string) (*C.char, error) {
	if strings.IndexByte(v, 0) >= 0 {
		return nil, newError(StatusInvalidArgument, what+" contains a NUL byte")
	}
	p := a.alloc(uintptr(len(v)) + 1)
	copy(unsafe.Slice((*byte)(p), len(v)), v)
	return (*C.char)(p), nil
}

// optStr is str with "" meaning NULL (the room counted stays unused).
func (a *arena) optStr(what, v string) (*C.char, error) {
	if v == "" {
		a.alloc(1)
		return nil, nil
	}
	return a.str(what, v)
}

// bytes copies v; NULL when empty.
func (a *arena) bytes(v []byte) *C.uint8_t {
	if len(v) == 0 {
		return nil
	}
	p := a.alloc(uintptr(len(v)))
	copy(unsafe.Slice((*byte)(p), len(v)), v)
	return (*C.uint8_t)(p)
}

// headers copies h into an array of ringbroker_header; NULL when empty.
func (a *arena) headers(h []Header) (*C.ringbroker_header, error) {
	if len(h) == 0 {
		a.alloc(0)
		return nil, nil
	}
	arr := unsafe.Slice((*C.ringbroker_header)(a.alloc(uintptr(len(h))*C.sizeof_ringbroker_header)), len(h))
	for i, x := range h {
		name, err := a.str("header name", x.Name)
		if err != nil {
			return nil, err
		}
		arr[i].name = name
		arr[i].value = a.bytes(x.Value)
		arr[i].value_len = C.uintptr_t(len(x.Value))
	}
	return &arr[0], nil
}
