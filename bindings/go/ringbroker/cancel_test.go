package ringbroker

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// prompt is how soon a cancelled or expired call must return.
const prompt = time.Second

// expectCtxErr runs f with a context cancelled after 30ms, then with one whose
// deadline is 30ms away, then with one already cancelled: each returns the
// context's error promptly.
func expectCtxErr(t *testing.T, what string, f func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	within(t, prompt, what+" (cancelled)", func() {
		if err := f(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("%s, cancelled: %v", what, err)
		}
	})
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	within(t, prompt, what+" (deadline)", func() {
		if err := f(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s, deadline: %v", what, err)
		}
	})
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	within(t, prompt, what+" (already cancelled)", func() {
		if err := f(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("%s, already cancelled: %v", what, err)
		}
	})
}

// Next and Fetch, direct and through the Messages channel, end with their context;
// the consumer still receives afterwards.
func TestReceiveCancellation(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		subject := unique("quiet")
		sub, err := b.Subscribe(testCtx(t), subject)
		must(t, err)
		defer sub.Close()
		expectCtxErr(t, "Next", func(ctx context.Context) error { _, err := sub.Next(ctx); return err })
		expectCtxErr(t, "Fetch", func(ctx context.Context) error { _, err := sub.Fetch(ctx, 10); return err })
		must(t, b.Publish(subject, []byte("after")))
		m, err := sub.Next(testCtx(t))
		must(t, err)
		if string(m.Data) != "after" {
			t.Fatalf("got %q", m.Data)
		}
		sub.Messages()
		expectCtxErr(t, "Next on the channel", func(ctx context.Context) error { _, err := sub.Next(ctx); return err })
		expectCtxErr(t, "Fetch on the channel", func(ctx context.Context) error { _, err := sub.Fetch(ctx, 10); return err })
		must(t, b.Publish(subject, []byte("still")))
		msgs, err := sub.Fetch(testCtx(t), 10)
		must(t, err)
		if len(msgs) != 1 || string(msgs[0].Data) != "still" {
			t.Fatalf("got %d messages", len(msgs))
		}

		// Two receivers: the second waits its turn and can be cancelled while waiting.
		other, err := b.Subscribe(testCtx(t), unique("quiet"))
		must(t, err)
		defer other.Close()
		first := make(chan error, 1)
		firstCtx, stopFirst := context.WithCancel(context.Background())
		go func() { _, err := other.Next(firstCtx); first <- err }()
		time.Sleep(20 * time.Millisecond)
		expectCtxErr(t, "Next behind another receiver", func(ctx context.Context) error { _, err := other.Next(ctx); return err })
		stopFirst()
		if err := <-first; !errors.Is(err, context.Canceled) {
			t.Fatalf("the first receiver: %v", err)
		}
	})
}

// Request ends with its context (cancelled, deadline) while the responder stays
// silent; without a deadline the broker's request timeout gives ErrTimeout.
func TestRequestCancellation(t *testing.T) {
	check := func(t *testing.T, b *Broker) {
		subject := unique("silent")
		sub, err := b.Subscribe(testCtx(t), subject)
		must(t, err)
		defer sub.Close()
		expectCtxErr(t, "Request", func(ctx context.Context) error {
			_, err := b.Request(ctx, subject, []byte("hello?"))
			return err
		})
		within(t, prompt, "Request under the default timeout", func() {
			if _, err := b.Request(context.Background(), subject, nil); !errors.Is(err, ErrTimeout) {
				t.Fatalf("the broker's request timeout: %v", err)
			}
		})
	}
	t.Run("embedded", func(t *testing.T) {
		b, err := Open(Config{DataDir: t.TempDir(), Shards: 1, DisablePinning: true, RequestTimeout: 100 * time.Millisecond})
		must(t, err)
		defer b.Close()
		check(t, b)
	})
	t.Run("remote", func(t *testing.T) {
		b, err := Connect(testCtx(t), daemonURL, WithRequestTimeout(100*time.Millisecond), WithClientName("go-test"))
		must(t, err)
		defer b.Close()
		check(t, b)
	})
}

// A publish that waits for a batched sync ends with its context; so do confirms.
func TestPublishWaitCancellation(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		name := unique("slow")
		must(t, b.CreateStream(testCtx(t), StreamConfig{Name: name, Subjects: []string{name + ".>"},
			Durability: "batch:1000:1000000000"}))
		rec := Record{Subject: name + ".x", Data: []byte("waits for the batch")}
		expectCtxErr(t, "PublishRecords", func(ctx context.Context) error {
			_, err := b.PublishRecords(ctx, rec)
			return err
		})
		expectCtxErr(t, "PublishRecord", func(ctx context.Context) error {
			_, err := b.PublishRecord(ctx, rec)
			return err
		})
		// Exchange confirms: a context that is already over.
		done, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := b.PublishExchange(done, false, Publishing{RoutingKey: "nowhere"}); !errors.Is(err, context.Canceled) {
			t.Fatalf("PublishExchange: %v", err)
		}
	})
}

// Every call that takes a context returns ctx.Err() when it is already over.
func TestCallsWithEndedContext(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		calls := map[string]func() error{
			"Subscribe":        func() error { _, err := b.Subscribe(ctx, "a"); return err },
			"QueueSubscribe":   func() error { _, err := b.QueueSubscribe(ctx, "a", "g"); return err },
			"Request":          func() error { _, err := b.Request(ctx, "a", nil); return err },
			"CreateStream":     func() error { return b.CreateStream(ctx, StreamConfig{Name: "s"}) },
			"UpdateStream":     func() error { return b.UpdateStream(ctx, StreamConfig{Name: "s"}) },
			"DeleteStream":     func() error { return b.DeleteStream(ctx, "s") },
			"StreamInfo":       func() error { _, err := b.StreamInfo(ctx, "s"); return err },
			"PublishRecords":   func() error { _, err := b.PublishRecords(ctx, Record{Subject: "s"}); return err },
			"CreateConsumer":   func() error { return b.CreateConsumer(ctx, "s", ConsumerConfig{Durable: "d"}) },
			"DeleteConsumer":   func() error { return b.DeleteConsumer(ctx, "s", "d") },
			"ConsumerInfo":     func() error { _, err := b.ConsumerInfo(ctx, "s", "d"); return err },
			"Consume":          func() error { _, err := b.Consume(ctx, "s", "d"); return err },
			"ConsumeEphemeral": func() error { _, err := b.ConsumeEphemeral(ctx, "s", ConsumerConfig{}); return err },
			"DeclareExchange":  func() error { return b.DeclareExchange(ctx, ExchangeConfig{Name: "e", Kind: ExchangeDirect}) },
			"DeleteExchange":   func() error { return b.DeleteExchange(ctx, "e", false) },
			"BindExchange":     func() error { return b.BindExchange(ctx, "e", "f", "", nil) },
			"DeclareQueue":     func() error { _, err := b.DeclareQueue(ctx, QueueConfig{Name: "q"}); return err },
			"DeleteQueue":      func() error { _, err := b.DeleteQueue(ctx, "q", false, false); return err },
			"PurgeQueue":       func() error { _, err := b.PurgeQueue(ctx, "q"); return err },
			"QueueInfo":        func() error { _, err := b.QueueInfo(ctx, "q"); return err },
			"BindQueue":        func() error { return b.BindQueue(ctx, "q", "e", "k", nil) },
			"UnbindQueue":      func() error { return b.UnbindQueue(ctx, "q", "e", "k", nil) },
			"PublishExchange":  func() error { _, err := b.PublishExchange(ctx, false, Publishing{}); return err },
			"ConsumeQueue":     func() error { _, err := b.ConsumeQueue(ctx, "q", QueueConsumeConfig{}); return err },
		}
		for name, f := range calls {
			if err := f(); !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a cancelled context: %v", name, err)
			}
		}
	})
}

// Connect ends with its context against a listener that never answers, and fails
// with ErrDisconnected where nothing listens.
func TestConnectCancellationAndErrors(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer silent.Close()
	go func() { // accepts and never speaks, until the listener closes
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for i := 0; i < 16; i++ {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	if connectRemote(t).IsEmbedded() {
		t.Fatal("a connected broker is not embedded")
	}
	url := "ringbroker://" + silent.Addr().String()
	expectCtxErr(t, "Connect", func(ctx context.Context) error {
		b, err := Connect(ctx, url)
		if err == nil {
			b.Close()
		}
		return err
	})

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := closed.Addr().String()
	closed.Close()
	if _, err := Connect(testCtx(t), "ringbroker://"+addr); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("connect where nothing listens: %v", err)
	}
	if _, err := Connect(testCtx(t), "http://example.invalid"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("a bad url: %v", err)
	}
}

// Closing a consumer or the broker wakes waiting receivers and requesters with
// ErrClosed; calls after Close return ErrClosed; Close is idempotent.
func TestCloseWakesWaiters(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		ctx := testCtx(t)
		sub, err := b.Subscribe(ctx, unique("idle"))
		must(t, err)
		got := make(chan error, 1)
		go func() { _, err := sub.Next(ctx); got <- err }()
		time.Sleep(20 * time.Millisecond)
		within(t, prompt, "Consumer.Close", func() { must(t, sub.Close()) })
		if err := <-got; !errors.Is(err, ErrClosed) {
			t.Fatalf("Next across Consumer.Close: %v", err)
		}
		must(t, sub.Close())

		sub2, err := b.Subscribe(ctx, unique("idle"))
		must(t, err)
		pump := sub2.Messages()
		next := make(chan error, 1)
		go func() { _, err := sub2.Next(ctx); next <- err }()
		silent := unique("silent")
		_, err = b.Subscribe(ctx, silent) // takes requests, never answers; closed by Broker.Close
		must(t, err)
		req := make(chan error, 1)
		go func() { _, err := b.Request(ctx, silent, nil); req <- err }()
		time.Sleep(30 * time.Millisecond)
		within(t, 2*prompt, "Broker.Close", func() { must(t, b.Close()) })
		if err := <-req; !errors.Is(err, ErrClosed) {
			t.Fatalf("Request across Broker.Close: %v", err)
		}
		if err := <-next; !errors.Is(err, ErrClosed) {
			t.Fatalf("Next across Broker.Close: %v", err)
		}
		if _, ok := <-pump; ok {
			t.Fatal("the Messages channel must close with the broker")
		}
		if err := b.Publish("a", nil); !errors.Is(err, ErrClosed) {
			t.Fatalf("Publish after Close: %v", err)
		}
		if _, err := b.Subscribe(ctx, "a"); !errors.Is(err, ErrClosed) {
			t.Fatalf("Subscribe after Close: %v", err)
		}
		if _, err := b.Request(ctx, "a", nil); !errors.Is(err, ErrClosed) {
			t.Fatalf("Request after Close: %v", err)
		}
		if _, err := b.QueueInfo(ctx, "q"); !errors.Is(err, ErrClosed) {
			t.Fatalf("QueueInfo after Close: %v", err)
		}
		must(t, b.Close())
	})
}
