package ringbroker

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Each sentinel matches exactly its status, carries the header's name, and an
// *Error with a message matches its sentinel but no other.
func TestErrorSentinels(t *testing.T) {
	sentinels := map[Status]*Error{
		StatusMalformed: ErrMalformed, StatusFrameTooLarge: ErrFrameTooLarge, StatusUnknownOp: ErrUnknownOp,
		StatusOutOfState: ErrOutOfState, StatusVersionUnsupported: ErrVersionUnsupported,
		StatusAuthFailed: ErrAuthFailed, StatusNotFound: ErrNotFound, StatusAlreadyExists: ErrAlreadyExists,
		StatusInvalidArgument: ErrInvalidArgument, StatusNoResponders: ErrNoResponders, StatusTimeout: ErrTimeout,
		StatusBackpressure: ErrBackpressure, StatusShuttingDown: ErrShuttingDown, StatusRefused: ErrRefused,
		StatusLocked: ErrLocked, StatusUnroutable: ErrUnroutable, StatusSlowConsumer: ErrSlowConsumer,
		StatusIdleTimeout: ErrIdleTimeout, StatusInternal: ErrInternal, StatusIDInUse: ErrIDInUse,
		StatusDisconnected: ErrDisconnected, StatusWouldBlock: ErrWouldBlock, StatusWrongKind: ErrWrongKind,
	}
	if len(sentinels) != 23 {
		t.Fatalf("%d sentinels", len(sentinels))
	}
	for s, sentinel := range sentinels {
		if sentinel.Status != s || strings.HasPrefix(s.String(), "UNKNOWN(") {
			t.Fatalf("status %d: sentinel %v, name %q", s, sentinel.Status, s.String())
		}
		err := fmt.Errorf("wrapped: %w", newError(s, "why"))
		if !errors.Is(err, sentinel) {
			t.Fatalf("%v does not match its sentinel", err)
		}
		for other, o := range sentinels {
			if other != s && errors.Is(err, o) {
				t.Fatalf("%v matches %v", err, o)
			}
		}
		if !strings.Contains(err.Error(), s.String()) || !strings.Contains(err.Error(), "why") {
			t.Fatalf("message %q", err.Error())
		}
	}
	if StatusNotFound.String() != "NOT_FOUND" || Status(77).String() != "UNKNOWN(77)" {
		t.Fatalf("names: %q %q", StatusNotFound, Status(77))
	}
	if ErrTimeout.Error() != "ringbroker: TIMEOUT" {
		t.Fatalf("a sentinel's text: %q", ErrTimeout.Error())
	}
}

// The linked library is the one this package was written against.
func TestVersion(t *testing.T) {
	if LibraryABIVersion() != ABIVersion {
		t.Fatalf("library ABI %d, package %d", LibraryABIVersion(), ABIVersion)
	}
	if v := Version(); strings.Count(v, ".") != 2 {
		t.Fatalf("version %q", v)
	}
}

// Open's error paths: no data directory, a directory another broker holds, a
// DataDir that is a file.
func TestOpenErrors(t *testing.T) {
	if _, err := Open(Config{}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("no DataDir: %v", err)
	}
	dir := t.TempDir()
	b, err := Open(Config{DataDir: dir, Shards: 1, DisablePinning: true})
	must(t, err)
	defer b.Close()
	if !b.IsEmbedded() {
		t.Fatal("an opened broker is embedded")
	}
	if _, err := Open(Config{DataDir: dir, Shards: 1, DisablePinning: true}); !errors.Is(err, ErrLocked) {
		t.Fatalf("a second broker on one directory: %v", err)
	}
	if _, err := Open(Config{DataDir: "bad\x00dir"}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("a NUL in DataDir: %v", err)
	}
	if _, err := Open(Config{DataDir: t.TempDir(), Shards: -1}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("negative shards: %v", err)
	}
	for _, spin := range []time.Duration{-time.Microsecond, time.Second + time.Microsecond} {
		if _, err := Open(Config{DataDir: t.TempDir(), Shards: 1, DisablePinning: true, IdleSpin: spin}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("IdleSpin %v: %v", spin, err)
		}
	}
	spinning, err := Open(Config{DataDir: t.TempDir(), Shards: 1, DisablePinning: true, IdleSpin: 50 * time.Microsecond})
	must(t, err)
	must(t, spinning.Close())
}

// Argument errors on subjects: an invalid subject or pattern, a NUL byte, one bad
// message refusing a whole batch, acknowledging a subject message.
func TestSubjectErrors(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		ctx := testCtx(t)
		err := b.Publish("bad subject", nil)
		var e *Error
		if !errors.As(err, &e) || e.Status != StatusInvalidArgument || e.Message == "" {
			t.Fatalf("an invalid subject: %v", err)
		}
		if err := b.Publish("a\x00b", nil); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("a NUL in a subject: %v", err)
		}
		// Around the longest subject Publish copies on the C stack (RBGO_SUBJECT_STACK,
		// the library's limit too): the library's own errors, with its messages.
		for _, subject := range []string{"", strings.Repeat("a", 1025), strings.Repeat("a", 4096)} {
			err := b.Publish(subject, nil)
			if !errors.As(err, &e) || e.Status != StatusInvalidArgument || e.Message == "" {
				t.Fatalf("a subject of %d bytes: %v", len(subject), err)
			}
		}
		must(t, b.Publish(strings.Repeat("a", 1024), nil))
		if _, err := b.Subscribe(ctx, "bad pattern"); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("an invalid pattern: %v", err)
		}
		if _, err := b.Request(ctx, "a\x00", nil); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("a NUL in a request subject: %v", err)
		}
		root := unique("be")
		sub, err := b.Subscribe(ctx, root+".>")
		must(t, err)
		defer sub.Close()
		err = b.PublishBatch([]SubjectMsg{{Subject: root + ".ok"}, {Subject: "not valid"}})
		if !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("a batch with a bad message: %v", err)
		}
		must(t, b.PublishBatch(nil))
		must(t, b.Publish(root+".after", []byte("x")))
		m, err := sub.Next(ctx)
		must(t, err)
		if m.Subject != root+".after" {
			t.Fatalf("the refused batch published %q", m.Subject)
		}
		for name, f := range map[string]func() error{
			"Ack": m.Ack, "Commit": m.Commit, "Reject": m.Reject,
			"Nak": func() error { return m.Nak(time.Millisecond) },
		} {
			if err := f(); !errors.Is(err, ErrWrongKind) {
				t.Errorf("%s on a subject message: %v", name, err)
			}
		}
		if err := m.Nak(-time.Second); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("a negative Nak delay: %v", err)
		}
		if err := sub.QueueAck(1, false); !errors.Is(err, ErrWrongKind) {
			t.Fatalf("QueueAck on a subscription: %v", err)
		}
		if err := sub.QueueNack(1, false, true); !errors.Is(err, ErrWrongKind) {
			t.Fatalf("QueueNack on a subscription: %v", err)
		}
		if err := sub.AckBatch([]*Msg{m}); !errors.Is(err, ErrWrongKind) {
			t.Fatalf("AckBatch on a subscription: %v", err)
		}
		must(t, sub.AckBatch(nil))
		if err := sub.AckBatch([]*Msg{m, nil}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("AckBatch with a nil message: %v", err)
		}
		m.Release()
	})
}

// Messages dropped without Release are freed by the garbage collector's cleanup:
// the safety net runs without crashing, also after their consumer closed.
func TestUnreleasedMessagesAreCollected(t *testing.T) {
	b := openEmbedded(t)
	ctx := testCtx(t)
	subject := unique("gc")
	sub, err := b.Subscribe(ctx, subject)
	must(t, err)
	batch := make([]SubjectMsg, 200)
	for i := range batch {
		batch[i] = SubjectMsg{Subject: subject, Data: make([]byte, 1024)}
	}
	must(t, b.PublishBatch(batch))
	for got := 0; got < len(batch); {
		msgs, err := sub.Fetch(ctx, 0)
		must(t, err)
		got += len(msgs) // dropped unreleased
	}
	sub.Close()
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
}

// Connect options reach the library: an auth token and a client name are accepted
// by a daemon without auth; reconnect off still connects; a bad option value is
// refused.
func TestConnectOptions(t *testing.T) {
	b, err := Connect(testCtx(t), daemonURL, WithAuthToken("unused"), WithClientName("go-options"),
		WithReconnect(false), WithRequestTimeout(2*time.Second))
	must(t, err)
	defer b.Close()
	if _, err := b.StreamInfo(testCtx(t), unique("none")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a call on the connection: %v", err)
	}
	if _, err := Connect(testCtx(t), daemonURL, WithClientName("bad\x00name")); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("a NUL in an option: %v", err)
	}
}

// Kinds have names.
func TestKindNames(t *testing.T) {
	for k, want := range map[Kind]string{KindSubject: "subject", KindStream: "stream", KindQueue: "queue", Kind(9): "unknown"} {
		if k.String() != want {
			t.Fatalf("%d: %q", k, k.String())
		}
	}
}
