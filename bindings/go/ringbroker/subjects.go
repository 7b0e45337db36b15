package ringbroker

/*
#include <string.h>
#include "ringbroker.h"

// The longest subject rbgo_publish copies (longer ones go through a Go copy).
#define RBGO_SUBJECT_STACK 1024

// ringbroker_publish with the subject given as bytes and a length: a Go string's,
// passed for the duration of the call without a copy in Go (its bytes hold no Go
// pointer). The NUL-terminated copy the C ABI takes is made here, on the stack.
static ringbroker_status rbgo_publish(const ringbroker_t *h, const char *subject,
                                      size_t subject_len, const uint8_t *payload, size_t len) {
	char s[RBGO_SUBJECT_STACK + 1];
	if (subject_len > RBGO_SUBJECT_STACK) return RINGBROKER_INVALID_ARGUMENT;
	memcpy(s, subject, subject_len);
	s[subject_len] = 0;
	return ringbroker_publish(h, s, NULL, payload, len);
}
*/
import "C"

import (
	"context"
	"runtime"
	"strings"
	"time"
	"unsafe"
)

// SubjectMsg is a message to publish on a subject (PublishMsg, PublishBatch).
type SubjectMsg struct {
	// Subject is where it goes (no wildcards).
	Subject string
	// Reply is where a responder answers ("" for none).
	Reply string
	// Headers are copied with the message.
	Headers []Header
	// Data is the payload.
	Data []byte
}

// Publish sends data on subject, fire and forget (at most once): it returns once the
// message is queued, without waiting. ErrBackpressure if the engine is saturated,
// ErrDisconnected if the connection is down.
func (b *Broker) Publish(subject string, data []byte) error {
	if len(subject) > C.RBGO_SUBJECT_STACK || len(subject) == 0 {
		// Invalid here, but the library says why (too long, empty).
		s, err := cstring("subject", subject)
		if err != nil {
			return err
		}
		return b.do(func() C.ringbroker_status {
			return C.ringbroker_publish(b.h, s, nil, bytesPtr(data), C.uintptr_t(len(data)))
		})
	}
	// The hot path, written out: no Go copy of the subject, no closure.
	if strings.IndexByte(subject, 0) >= 0 {
		return newError(StatusInvalidArgument, "subject contains a NUL byte")
	}
	if err := b.acquire(); err != nil {
		return err
	}
	defer b.release()
	runtime.LockOSThread() // lastError reads this thread's message (see call)
	defer runtime.UnlockOSThread()
	s := C.rbgo_publish(b.h, (*C.char)(unsafe.Pointer(unsafe.StringData(subject))), C.size_t(len(subject)),
		bytesPtr(data), C.size_t(len(data)))
	if s != C.RINGBROKER_OK {
		return lastError(s)
	}
	return nil
}

// PublishMsg sends one message with a reply subject and headers; as Publish.
func (b *Broker) PublishMsg(m SubjectMsg) error { return b.PublishBatch([]SubjectMsg{m}) }

// PublishBatch sends msgs in one call (far cheaper per message than Publish): every
// message is checked before any is sent, and one bad message refuses the whole batch
// with ErrInvalidArgument. A remote batch travels in one frame (ErrFrameTooLarge
// over the server's limit). Fire and forget, as Publish.
func (b *Broker) PublishBatch(msgs []SubjectMsg) error {
	if len(msgs) == 0 {
		return nil
	}
	var size arenaSize
	size.add(uintptr(len(msgs)) * C.sizeof_ringbroker_subject_msg)
	for i := range msgs {
		size.str(msgs[i].Subject)
		size.str(msgs[i].Reply)
		size.headers(msgs[i].Headers)
		size.bytes(msgs[i].Data)
	}
	a := newArena(size)
	defer a.free()
	arr := unsafe.Slice((*C.ringbroker_subject_msg)(a.alloc(uintptr(len(msgs))*C.sizeof_ringbroker_subject_msg)), len(msgs))
	for i := range msgs {
		m := &msgs[i]
		var err error
		if arr[i].subject, err = a.str("subject", m.Subject); err != nil {
			return err
		}
		if arr[i].reply, err = a.optStr("reply", m.Reply); err != nil {
			return err
		}
		if arr[i].headers, err = a.headers(m.Headers); err != nil {
			return err
		}
		arr[i].headers_len = C.uintptr_t(len(m.Headers))
		arr[i].payload = a.bytes(m.Data)
		arr[i].payload_len = C.uintptr_t(len(m.Data))
	}
	return b.do(func() C.ringbroker_status {
		return C.ringbroker_publish_batch(b.h, &arr[0], C.uintptr_t(len(arr)))
	})
}

// Subscribe subscribes to pattern ("*" matches one token, ">" the rest).
func (b *Broker) Subscribe(ctx context.Context, pattern string) (*Consumer, error) {
	return b.QueueSubscribe(ctx, pattern, "")
}

// QueueSubscribe subscribes to pattern in queue group group: each message goes to
// one member of the group. An empty group is a plain subscription.
func (b *Broker) QueueSubscribe(ctx context.Context, pattern, group string) (*Consumer, error) {
	p, err := cstring("pattern", pattern)
	if err != nil {
		return nil, err
	}
	g, err := optCString("queue group", group)
	if err != nil {
		return nil, err
	}
	return b.newConsumerCtx(ctx, KindSubject, func(out **C.ringbroker_consumer_t) C.ringbroker_status {
		return C.ringbroker_subscribe(b.h, p, g, out)
	}, nil)
}

// Request sends data to subject and waits for the first reply. The wait ends with
// the context: ctx.Err() when it is cancelled or its deadline passes. A context
// without a deadline waits at most the broker's request timeout (ErrTimeout).
// ErrNoResponders at once if nothing subscribes to subject. No OS thread blocks:
// the request is asynchronous in the library and its reply comes through the
// broker's completion queue. Release the reply when done with it.
func (b *Broker) Request(ctx context.Context, subject string, data []byte) (*Msg, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := cstring("subject", subject)
	if err != nil {
		return nil, err
	}
	wait := b.requestTimeout
	deadline, hasDeadline := ctx.Deadline()
	if hasDeadline {
		wait = time.Until(deadline)
	}
	timeout := C.int64_t(millisCeil(wait))
	token, ch, err := b.completions.register(1, false)
	if err != nil {
		return nil, err
	}
	err = b.do(func() C.ringbroker_status {
		return C.ringbroker_request_async(b.h, s, bytesPtr(data), C.uintptr_t(len(data)), timeout, C.uint64_t(token))
	})
	if err != nil {
		b.completions.forget(token, ch)
		return nil, err
	}
	got, err := b.completions.await(ctx, token, ch, 1)
	if err != nil {
		return nil, err
	}
	c := got[0]
	if c.err != nil {
		// The library's timeout was the context's deadline: report it as the context.
		if hasDeadline && errorIs(c.err, StatusTimeout) && !time.Now().Before(deadline) {
			return nil, context.DeadlineExceeded
		}
		return nil, c.err
	}
	return c.reply, nil
}

func errorIs(err error, s Status) bool {
	e, ok := err.(*Error)
	return ok && e.Status == s
}
