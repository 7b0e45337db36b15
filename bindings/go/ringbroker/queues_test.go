package ringbroker

import (
	"errors"
	"testing"
	"time"
)

// Exchanges and queues: declare, bind, publish with properties and confirms, a
// mandatory unroutable publish, consume with a prefetch, requeue, ack by tag and by
// message, reject to a dead-letter queue, purge, info, unbind, delete.
func TestQueuesLifecycle(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		ctx := testCtx(t)
		exchange, queue, dlq := unique("events"), unique("jobs"), unique("dead")
		must(t, b.DeclareExchange(ctx, ExchangeConfig{Name: exchange, Kind: ExchangeTopic}))
		must(t, b.DeclareExchange(ctx, ExchangeConfig{Name: exchange, Kind: ExchangeTopic}))
		if err := b.DeclareExchange(ctx, ExchangeConfig{Name: exchange, Kind: ExchangeFanout}); !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("a different exchange definition: %v", err)
		}
		dlx := unique("dlx")
		must(t, b.DeclareExchange(ctx, ExchangeConfig{Name: dlx, Kind: ExchangeDirect}))
		_, err := b.DeclareQueue(ctx, QueueConfig{Name: dlq})
		must(t, err)
		must(t, b.BindQueue(ctx, dlq, dlx, dlq, nil))
		info, err := b.DeclareQueue(ctx, QueueConfig{Name: queue, MaxPriority: 5, DeadLetterExchange: dlx, DeadLetterRoutingKey: dlq})
		must(t, err)
		if info.Messages != 0 {
			t.Fatalf("a new queue: %+v", info)
		}
		must(t, b.BindQueue(ctx, queue, exchange, "jobs.#", nil))

		m := Publishing{Exchange: exchange, RoutingKey: "jobs.eu", Data: []byte("job"), Priority: 3, Persistent: true,
			Headers: []Header{{Name: "tenant", Value: []byte("acme")}}}
		confirms, err := b.PublishExchange(ctx, true, m, m, m)
		must(t, err)
		for i, c := range confirms {
			if c.Err != nil || c.Queues != 1 {
				t.Fatalf("confirm %d: %+v", i, c)
			}
		}
		lost := m
		lost.RoutingKey = "nowhere"
		confirms, err = b.PublishExchange(ctx, true, lost)
		if !errors.Is(err, ErrUnroutable) || len(confirms) != 1 || !errors.Is(confirms[0].Err, ErrUnroutable) {
			t.Fatalf("mandatory and unroutable: %v %+v", err, confirms)
		}
		confirms, err = b.PublishExchange(ctx, false, lost)
		if err != nil || confirms[0].Queues != 0 {
			t.Fatalf("unroutable, not mandatory: %v %+v", err, confirms)
		}
		qi, err := b.QueueInfo(ctx, queue)
		must(t, err)
		if qi.Messages != 3 {
			t.Fatalf("three ready: %+v", qi)
		}

		jobs, err := b.ConsumeQueue(ctx, queue, QueueConsumeConfig{Prefetch: 1})
		must(t, err)
		defer jobs.Close()
		if jobs.Kind() != KindQueue {
			t.Fatalf("kind %v", jobs.Kind())
		}
		d, err := jobs.Next(ctx)
		must(t, err)
		if d.Kind != KindQueue || d.Priority != 3 || !d.Persistent || d.Exchange != exchange ||
			d.Queue != queue || d.Subject != "jobs.eu" || string(d.Data) != "job" {
			t.Fatalf("a delivery with its properties: %+v", d)
		}
		if v, ok := d.Header("tenant"); !ok || string(v) != "acme" {
			t.Fatalf("the delivery's header: %q %v", v, ok)
		}
		if err := d.Nak(5 * time.Millisecond); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("a queue nack takes no delay: %v", err)
		}
		if err := d.Commit(); !errors.Is(err, ErrWrongKind) {
			t.Fatalf("Commit on a queue delivery: %v", err)
		}
		must(t, d.Nack(true))
		d.Release()
		d, err = jobs.Next(ctx)
		must(t, err)
		if !d.Redelivered {
			t.Fatal("requeued, then redelivered")
		}
		must(t, jobs.QueueAck(d.DeliveryTag, false))
		d.Release()
		d, err = jobs.Next(ctx)
		must(t, err)
		must(t, d.Ack())
		d.Release()
		d, err = jobs.Next(ctx)
		must(t, err)
		must(t, d.Reject()) // dead-lettered through dlx to dlq
		d.Release()
		dead, err := b.ConsumeQueue(ctx, dlq, QueueConsumeConfig{NoAck: true})
		must(t, err)
		defer dead.Close()
		dm, err := dead.Next(ctx)
		must(t, err)
		if string(dm.Data) != "job" {
			t.Fatalf("dead-lettered %q", dm.Data)
		}
		dm.Release()

		// QueueNack by tag, then purge what is ready.
		_, err = b.PublishExchange(ctx, true, m, m)
		must(t, err)
		d, err = jobs.Next(ctx)
		must(t, err)
		must(t, jobs.QueueNack(d.DeliveryTag, false, true))
		d.Release()
		jobs.Close() // its unacknowledged delivery goes back to the queue
		waitQueue(t, b, queue, 2)
		purged, err := b.PurgeQueue(ctx, queue)
		must(t, err)
		if purged != 2 {
			t.Fatalf("purged %d, want 2", purged)
		}

		must(t, b.UnbindQueue(ctx, queue, exchange, "jobs.#", nil))
		confirms, err = b.PublishExchange(ctx, false, m)
		if err != nil || confirms[0].Queues != 0 {
			t.Fatalf("after unbind: %v %+v", err, confirms)
		}
		ready, err := b.DeleteQueue(ctx, queue, false, false)
		must(t, err)
		if ready != 0 {
			t.Fatalf("ready at delete: %d", ready)
		}
		if _, err := b.QueueInfo(ctx, queue); !errors.Is(err, ErrNotFound) {
			t.Fatalf("info after delete: %v", err)
		}
		dead.Close()
		_, err = b.DeleteQueue(ctx, dlq, false, false)
		must(t, err)
		must(t, b.DeleteExchange(ctx, exchange, false))
		must(t, b.DeleteExchange(ctx, dlx, false))
		if err := b.DeleteExchange(ctx, exchange, false); !errors.Is(err, ErrNotFound) {
			t.Fatalf("delete twice: %v", err)
		}
	})
}

// Exchange-to-exchange bindings, headers exchanges, fire-and-forget publishes,
// delete guards (if-unused, if-empty) and a missing queue.
func TestExchangesBindingsAndGuards(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		ctx := testCtx(t)
		src, dst, hx, queue := unique("src"), unique("dst"), unique("hdr"), unique("q")
		must(t, b.DeclareExchange(ctx, ExchangeConfig{Name: src, Kind: ExchangeFanout}))
		must(t, b.DeclareExchange(ctx, ExchangeConfig{Name: dst, Kind: ExchangeDirect}))
		must(t, b.DeclareExchange(ctx, ExchangeConfig{Name: hx, Kind: ExchangeHeaders}))
		_, err := b.DeclareQueue(ctx, QueueConfig{Name: queue})
		must(t, err)
		must(t, b.BindExchange(ctx, dst, src, "", nil))
		must(t, b.BindQueue(ctx, queue, dst, "k", nil))
		must(t, b.BindQueue(ctx, queue, hx, "", []Header{{Name: "x-match", Value: []byte("all")}, {Name: "colour", Value: []byte("red")}}))

		confirms, err := b.PublishExchange(ctx, true, Publishing{Exchange: src, RoutingKey: "k", Data: []byte("via src")})
		if err != nil || confirms[0].Queues != 1 {
			t.Fatalf("through the exchange binding: %v %+v", err, confirms)
		}
		confirms, err = b.PublishExchange(ctx, false,
			Publishing{Exchange: hx, Headers: []Header{{Name: "colour", Value: []byte("red")}}, Data: []byte("red")},
			Publishing{Exchange: hx, Headers: []Header{{Name: "colour", Value: []byte("blue")}}, Data: []byte("blue")})
		if err != nil || confirms[0].Queues != 1 || confirms[1].Queues != 0 {
			t.Fatalf("headers exchange: %v %+v", err, confirms)
		}
		must(t, b.PublishExchangeNoWait(false, Publishing{Exchange: "", RoutingKey: queue, Data: []byte("default")}))
		waitQueue(t, b, queue, 3)
		if err := b.DeleteExchange(ctx, dst, true); !errors.Is(err, ErrRefused) {
			t.Fatalf("delete a bound exchange if unused: %v", err)
		}
		if _, err := b.DeleteQueue(ctx, queue, false, true); !errors.Is(err, ErrRefused) {
			t.Fatalf("delete a non-empty queue if empty: %v", err)
		}
		c, err := b.ConsumeQueue(ctx, queue, QueueConsumeConfig{})
		must(t, err)
		if _, err := b.DeleteQueue(ctx, queue, true, false); !errors.Is(err, ErrRefused) {
			t.Fatalf("delete a queue in use if unused: %v", err)
		}
		c.Close()
		ready, err := b.DeleteQueue(ctx, queue, false, false)
		must(t, err)
		if ready != 3 {
			t.Fatalf("ready at delete %d", ready)
		}
		if _, err := b.ConsumeQueue(ctx, queue, QueueConsumeConfig{}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("consume a missing queue: %v", err)
		}
		if _, err := b.PurgeQueue(ctx, queue); !errors.Is(err, ErrNotFound) {
			t.Fatalf("purge a missing queue: %v", err)
		}
		if err := b.BindQueue(ctx, queue, dst, "k", nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("bind a missing queue: %v", err)
		}
		if _, err := b.PublishExchange(ctx, false, Publishing{Exchange: src, Expiration: -time.Second}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("a negative expiration: %v", err)
		}
		if err := b.DeclareExchange(ctx, ExchangeConfig{Name: unique("bad"), Kind: "round-robin"}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("a bad exchange kind: %v", err)
		}
		for _, x := range []string{src, dst, hx} {
			must(t, b.DeleteExchange(ctx, x, false))
		}
	})
}

// waitQueue polls until queue has ready messages and none unacknowledged, within
// waitMax (a consumer's cancel reaches a daemon's queue asynchronously).
func waitQueue(t *testing.T, b *Broker, queue string, ready uint64) {
	t.Helper()
	ctx := testCtx(t)
	for {
		qi, err := b.QueueInfo(ctx, queue)
		must(t, err)
		if qi.Messages == ready && qi.Unacked == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("queue %s: %+v, want %d ready", queue, qi, ready)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
