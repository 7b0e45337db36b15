package ringbroker

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"
)

// eventFD watches one of the library's eventfds through the Go runtime's network
// poller (epoll), so a goroutine waiting for messages or completions parks like one
// waiting on a socket, with no OS thread blocked in C and no spinning.
//
// It holds a dup of the library's fd, never the original: the original belongs to
// the library and is closed by it. The dup shares the open file description, whose
// O_NONBLOCK flag the library already set (eventfd(EFD_NONBLOCK)) and relies on for
// its own reads of the counter; nothing here changes it (watchFD checks it is set,
// so os.NewFile has nothing to change, and (*os.File).Fd, which may switch a file
// to blocking mode, is never called). Only the library reads the counter (its try_
// calls clear it); this side only waits for readability. See docs/go.md, "Waiting".
type eventFD struct {
	file *os.File
	raw  syscall.RawConn
	// deadlineSet: a read deadline may be set on file (one waiter at a time uses it).
	deadlineSet bool
}

// longAgo is a read deadline in the past: it wakes a waiting Read at once.
var longAgo = time.Unix(1, 0)

// watchFD dups fd (close-on-exec) and registers the dup with the poller.
func watchFD(fd int, name string) (*eventFD, error) {
	nfd, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return nil, newError(StatusInternal, "dup of the "+name+" eventfd: "+errno.Error())
	}
	// os.NewFile registers a non-blocking descriptor with the poller as it is, but
	// would switch a blocking one to non-blocking mode: on a description shared with
	// the library, that is a change the library did not ask for. Refuse instead.
	flags, _, errno := syscall.Syscall(syscall.SYS_FCNTL, nfd, syscall.F_GETFL, 0)
	if errno != 0 || flags&syscall.O_NONBLOCK == 0 {
		syscall.Close(int(nfd))
		return nil, newError(StatusInternal, "the "+name+" eventfd is not in non-blocking mode")
	}
	file := os.NewFile(nfd, name)
	// A file the poller did not take has no deadlines: refuse it rather than block a
	// thread in read.
	if err := file.SetReadDeadline(time.Time{}); err != nil {
		file.Close()
		return nil, newError(StatusInternal, "the "+name+" eventfd is not pollable: "+err.Error())
	}
	raw, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, newError(StatusInternal, "the "+name+" eventfd: "+err.Error())
	}
	return &eventFD{file: file, raw: raw}, nil
}

// wait calls try until it returns true, parking on the poller between calls. try
// must be a non-blocking library call that, when it finds nothing, leaves the
// eventfd armed (the library's contract for its try_ calls); it runs on this
// goroutine. Returns nil once try returned true, ctx.Err() when ctx ends first,
// ErrClosed when the eventFD was closed. One waiter at a time.
func (e *eventFD) wait(ctx context.Context, try func() bool) error {
	if try() {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	deadline, hasDeadline := ctx.Deadline()
	if hasDeadline || e.deadlineSet {
		if err := e.file.SetReadDeadline(deadline); err != nil {
			return ErrClosed
		}
		e.deadlineSet = hasDeadline
	}
	stop := func() bool { return true }
	var fired chan struct{}
	if ctx.Done() != nil {
		fired = make(chan struct{})
		stop = context.AfterFunc(ctx, func() {
			_ = e.file.SetReadDeadline(longAgo)
			close(fired)
		})
	}
	err := e.raw.Read(func(uintptr) bool { return try() })
	if !stop() {
		<-fired // its deadline must not land on a later wait
		e.deadlineSet = true
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		// The poller's timer can fire just before the context's own.
		return context.DeadlineExceeded
	default:
		return ErrClosed
	}
}

// close closes the dup; a waiter returns ErrClosed.
func (e *eventFD) close() { _ = e.file.Close() }
