// Package ringbroker is the Go binding of ringbroker, an embeddable message broker
// with three models behind one handle: NATS-style subjects with request-reply,
// Kafka-style persistent partitioned streams with consumer groups, and
// RabbitMQ-style exchanges and queues with acknowledgements.
//
// A *Broker is either embedded in this process (Open) or connected to a ringbrokerd
// daemon (Connect); every other call behaves the same in both modes. The package
// is a cgo layer over the C ABI (include/ringbroker.h), linked statically against
// libringbroker.a built from the repository with `make -C bindings/go`.
//
// Waiting never blocks an OS thread in C: consumers and completions expose Linux
// eventfds, which this package watches through the Go runtime's network poller.
// Every blocking call takes a context.Context and returns ctx.Err() promptly once
// the context is done. Errors from the library are *Error values that match the
// exported sentinels (ErrTimeout, ErrNotFound, ...) with errors.Is and carry the
// library's message. See docs/go.md in the repository for the design.
package ringbroker

/*
#cgo CFLAGS: -I${SRCDIR}/../../../include
#cgo LDFLAGS: ${SRCDIR}/../../../target/release/libringbroker.a -lgcc_s -lutil -lrt -lpthread -lm -ldl
#include <stdlib.h>
#include <string.h>
#include "ringbroker.h"

*/
import "C"

import (
	"runtime"
	"strings"
	"unsafe"
)

// ABIVersion is the C ABI version this package was written against
// (RINGBROKER_ABI_VERSION of include/ringbroker.h).
const ABIVersion = C.RINGBROKER_ABI_VERSION

// Version returns the linked library's version, "MAJOR.MINOR.PATCH".
func Version() string { return C.GoString(C.ringbroker_version()) }

// LibraryABIVersion returns the ABI version of the linked library; it equals
// ABIVersion when the package and library come from the same checkout.
func LibraryABIVersion() uint32 { return uint32(C.ringbroker_abi_version()) }

// call runs one C call on a locked OS thread and turns a failure into an *Error with
// the thread-local message ringbroker_last_error_message holds: the goroutine must
// not move between the call and the read of its message.
func call(f func() C.ringbroker_status) error {
	runtime.LockOSThread()
	s := f()
	var err error
	if s != C.RINGBROKER_OK {
		err = lastError(s)
	}
	runtime.UnlockOSThread()
	return err
}

// lastError builds the error of status s from this thread's last message; call it on
// the thread that made the failing call (see call).
func lastError(s C.ringbroker_status) error {
	return newError(Status(s), C.GoString(C.ringbroker_last_error_message()))
}

// cstring returns s as a NUL-terminated byte array in Go memory (no Go pointers in
// it, so it may be passed to C for the duration of a call), or an
// ErrInvalidArgument error if s holds a NUL byte.
func cstring(what, s string) (*C.char, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, newError(StatusInvalidArgument, what+" contains a NUL byte")
	}
	b := make([]byte, len(s)+1)
	copy(b, s)
	return (*C.char)(unsafe.Pointer(&b[0])), nil
}

// optCString is cstring, with "" meaning NULL.
func optCString(what, s string) (*C.char, error) {
	if s == "" {
		return nil, nil
	}
	return cstring(what, s)
}

// bytesPtr returns a pointer to b's first byte for the duration of a C call (the C
// library copies payloads before it returns), or NULL if b is empty.
func bytesPtr(b []byte) *C.uint8_t {
	if len(b) == 0 {
		return nil
	}
	return (*C.uint8_t)(unsafe.Pointer(&b[0]))
}

// cbool is a C int flag.
func cbool(v bool) C.int {
	if v {
		return 1
	}
	return 0
}
