package ringbroker

// #include "ringbroker.h"
import "C"

import (
	"errors"
	"strconv"
)

// Status is a ringbroker_status of the C ABI: 0 is success, 1 to 21 are the native
// protocol's error codes (docs/protocol.md), 100 and up the C API's own.
type Status int32

// The statuses of include/ringbroker.h, one per RINGBROKER_* code.
const (
	StatusOK                 Status = C.RINGBROKER_OK                  // success
	StatusMalformed          Status = C.RINGBROKER_MALFORMED           // bytes from the server could not be decoded
	StatusFrameTooLarge      Status = C.RINGBROKER_FRAME_TOO_LARGE     // a frame over the maximum size
	StatusUnknownOp          Status = C.RINGBROKER_UNKNOWN_OP          // the server does not know an operation
	StatusOutOfState         Status = C.RINGBROKER_OUT_OF_STATE        // an operation not valid in the connection's state
	StatusVersionUnsupported Status = C.RINGBROKER_VERSION_UNSUPPORTED // no shared protocol version
	StatusAuthFailed         Status = C.RINGBROKER_AUTH_FAILED         // the auth token is missing or wrong
	StatusNotFound           Status = C.RINGBROKER_NOT_FOUND           // it does not exist, or a consumer ended
	StatusAlreadyExists      Status = C.RINGBROKER_ALREADY_EXISTS      // it exists with a different definition
	StatusInvalidArgument    Status = C.RINGBROKER_INVALID_ARGUMENT    // an invalid argument, key, name or definition
	StatusNoResponders       Status = C.RINGBROKER_NO_RESPONDERS       // a request matched no subscriber
	StatusTimeout            Status = C.RINGBROKER_TIMEOUT             // nothing came within the timeout
	StatusBackpressure       Status = C.RINGBROKER_BACKPRESSURE        // the engine is saturated
	StatusShuttingDown       Status = C.RINGBROKER_SHUTTING_DOWN       // the broker is stopping
	StatusRefused            Status = C.RINGBROKER_REFUSED             // the engine refused the operation
	StatusLocked             Status = C.RINGBROKER_LOCKED              // held by another connection or broker
	StatusUnroutable         Status = C.RINGBROKER_UNROUTABLE          // a mandatory publish reached no queue
	StatusSlowConsumer       Status = C.RINGBROKER_SLOW_CONSUMER       // closed: this client did not read
	StatusIdleTimeout        Status = C.RINGBROKER_IDLE_TIMEOUT        // closed: the connection was idle
	StatusInternal           Status = C.RINGBROKER_INTERNAL            // a bug or an I/O failure
	StatusIDInUse            Status = C.RINGBROKER_ID_IN_USE           // an id already in use on the connection
	StatusDisconnected       Status = C.RINGBROKER_DISCONNECTED        // the connection dropped or could not be made
	StatusWouldBlock         Status = C.RINGBROKER_WOULD_BLOCK         // a try_ call found nothing ready
	StatusWrongKind          Status = C.RINGBROKER_WRONG_KIND          // the call does not apply to this kind of object
)

// String is the status's name as the header spells it without the prefix
// ("NOT_FOUND"), or "UNKNOWN(n)".
func (s Status) String() string {
	name := C.GoString(C.ringbroker_status_name(C.ringbroker_status(s)))
	if name == "UNKNOWN" {
		return "UNKNOWN(" + strconv.Itoa(int(s)) + ")"
	}
	return name
}

// Error is a failure the library reported: its status and the library's message.
// Compare with errors.Is against the sentinels (ErrNotFound, ...), which match any
// *Error of their status, or read Status directly with errors.As.
type Error struct {
	// Status is what failed.
	Status Status
	// Message is the library's explanation ("" in the sentinels).
	Message string
}

// Error formats the error as "ringbroker: NAME: message".
func (e *Error) Error() string {
	if e.Message == "" {
		return "ringbroker: " + e.Status.String()
	}
	return "ringbroker: " + e.Status.String() + ": " + e.Message
}

// Is reports whether target is the sentinel of e's status: any *Error with the same
// status and no message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Status == e.Status
}

func newError(s Status, message string) *Error { return &Error{Status: s, Message: message} }

// Sentinels, one per failure status: errors.Is(err, ErrTimeout) is true for every
// *Error whose Status is StatusTimeout.
var (
	// ErrMalformed: bytes from the server could not be decoded.
	ErrMalformed = &Error{Status: StatusMalformed}
	// ErrFrameTooLarge: a frame exceeded the server's maximum (a publish too large).
	ErrFrameTooLarge = &Error{Status: StatusFrameTooLarge}
	// ErrUnknownOp: the server does not know an operation.
	ErrUnknownOp = &Error{Status: StatusUnknownOp}
	// ErrOutOfState: an operation not valid in the connection's state.
	ErrOutOfState = &Error{Status: StatusOutOfState}
	// ErrVersionUnsupported: client and server share no protocol version.
	ErrVersionUnsupported = &Error{Status: StatusVersionUnsupported}
	// ErrAuthFailed: the auth token is missing or wrong.
	ErrAuthFailed = &Error{Status: StatusAuthFailed}
	// ErrNotFound: the stream, consumer, exchange, queue or subscription does not
	// exist, or a consumer ended (the message says why).
	ErrNotFound = &Error{Status: StatusNotFound}
	// ErrAlreadyExists: it exists with a different definition.
	ErrAlreadyExists = &Error{Status: StatusAlreadyExists}
	// ErrInvalidArgument: an invalid argument, config key, name or definition.
	ErrInvalidArgument = &Error{Status: StatusInvalidArgument}
	// ErrNoResponders: a request matched no subscriber.
	ErrNoResponders = &Error{Status: StatusNoResponders}
	// ErrTimeout: nothing came within the library's timeout.
	ErrTimeout = &Error{Status: StatusTimeout}
	// ErrBackpressure: the engine is saturated; retry later.
	ErrBackpressure = &Error{Status: StatusBackpressure}
	// ErrShuttingDown: the broker is stopping.
	ErrShuttingDown = &Error{Status: StatusShuttingDown}
	// ErrRefused: the engine refused the operation (a full queue that rejects
	// publishes, a record over the stream's size limit, a delete of something in use).
	ErrRefused = &Error{Status: StatusRefused}
	// ErrLocked: an exclusive queue of another connection, or a data directory
	// another broker holds.
	ErrLocked = &Error{Status: StatusLocked}
	// ErrUnroutable: a mandatory publish reached no queue.
	ErrUnroutable = &Error{Status: StatusUnroutable}
	// ErrSlowConsumer: the server closed the connection because this client did not read.
	ErrSlowConsumer = &Error{Status: StatusSlowConsumer}
	// ErrIdleTimeout: the server closed the idle connection.
	ErrIdleTimeout = &Error{Status: StatusIdleTimeout}
	// ErrInternal: a bug caught at the library boundary, or an I/O failure.
	ErrInternal = &Error{Status: StatusInternal}
	// ErrIDInUse: an id already in use on the connection.
	ErrIDInUse = &Error{Status: StatusIDInUse}
	// ErrDisconnected: the connection to the daemon dropped or could not be made.
	ErrDisconnected = &Error{Status: StatusDisconnected}
	// ErrWouldBlock: a non-blocking call found nothing ready.
	ErrWouldBlock = &Error{Status: StatusWouldBlock}
	// ErrWrongKind: the call does not apply to this kind of consumer or message.
	ErrWrongKind = &Error{Status: StatusWrongKind}
)

// Errors of the Go layer itself (not library statuses).
var (
	// ErrClosed: the Broker or Consumer was closed by this program.
	ErrClosed = errors.New("ringbroker: closed")
	// ErrReleased: the message was released (Msg.Release) and can no longer be
	// acknowledged or answered.
	ErrReleased = errors.New("ringbroker: message released")
)
