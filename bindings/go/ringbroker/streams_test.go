package ringbroker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// A stream: create (idempotent), update, info; keyed records with headers in one
// batch, a Msg-Id duplicate, fire-and-forget records; a durable consumer with a nak
// (redelivered with count 2), a batch ack and a commit; consumer info; delete.
func TestStreamLifecycle(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		ctx := testCtx(t)
		name := unique("orders")
		cfg := StreamConfig{Name: name, Subjects: []string{name + ".>"}, Partitions: 2,
			Durability: "always", DedupWindow: time.Minute, MaxRecords: 1000}
		must(t, b.CreateStream(ctx, cfg))
		must(t, b.CreateStream(ctx, cfg)) // idempotent
		cfg.MaxRecords = 2000
		must(t, b.UpdateStream(ctx, cfg))
		changed := cfg
		changed.Partitions = 3
		if err := b.CreateStream(ctx, changed); !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("a different definition: %v", err)
		}

		subject := name + ".eu"
		recs := []Record{
			{Subject: subject, Key: []byte("k"), Headers: []Header{{Name: "Msg-Id", Value: []byte("id-1")}}, Data: []byte("r0")},
			{Subject: subject, Key: []byte("k"), Data: []byte("r1")},
			{Subject: subject, Key: []byte("k"), Data: []byte("r2")},
		}
		res, err := b.PublishRecords(ctx, recs...)
		must(t, err)
		if len(res) != 3 || res[2].Offset != res[0].Offset+2 || res[0].Partition != res[2].Partition {
			t.Fatalf("one key keeps its order in one partition: %+v", res)
		}
		dup, err := b.PublishRecord(ctx, recs[0])
		must(t, err)
		if !dup.Duplicate {
			t.Fatalf("a second Msg-Id id-1 must be a duplicate: %+v", dup)
		}
		must(t, b.PublishRecordsNoWait(Record{Subject: subject, Key: []byte("k"), Data: []byte("r3")}))

		info, err := b.StreamInfo(ctx, name)
		must(t, err)
		if info.Partitions != 2 {
			t.Fatalf("info %+v", info)
		}

		must(t, b.CreateConsumer(ctx, name, ConsumerConfig{Durable: "billing", AckWait: time.Minute, Deliver: DeliverAll}))
		c, err := b.Consume(ctx, name, "billing")
		must(t, err)
		defer c.Close()
		if c.Kind() != KindStream {
			t.Fatalf("kind %v", c.Kind())
		}
		var held []*Msg
		for len(held) < 4 {
			msgs, err := c.Fetch(ctx, 16)
			must(t, err)
			held = append(held, msgs...)
		}
		first := held[0]
		if first.Kind != KindStream || string(first.Key) != "k" || first.DeliveryCount != 1 ||
			string(first.Data) != "r0" || first.Subject != subject || first.Timestamp.IsZero() {
			t.Fatalf("first record %+v", first)
		}
		if v, ok := first.Header("Msg-Id"); !ok || string(v) != "id-1" {
			t.Fatalf("the record's header: %q %v", v, ok)
		}
		must(t, first.Nak(0))
		must(t, c.AckBatch(held[1:]))
		again, err := c.Next(ctx)
		must(t, err)
		if again.DeliveryCount != 2 || string(again.Data) != "r0" {
			t.Fatalf("the nacked record again: count %d %q", again.DeliveryCount, again.Data)
		}
		must(t, again.Commit())
		for _, m := range held {
			m.Release()
		}
		if err := held[1].Ack(); !errors.Is(err, ErrReleased) {
			t.Fatalf("Ack after Release: %v", err)
		}
		if err := c.AckBatch(held[1:2]); !errors.Is(err, ErrReleased) {
			t.Fatalf("AckBatch of a released message: %v", err)
		}
		if err := c.QueueAck(again.DeliveryTag, false); !errors.Is(err, ErrWrongKind) {
			t.Fatalf("QueueAck on a stream consumer: %v", err)
		}
		again.Release()

		ci, err := b.ConsumerInfo(ctx, name, "billing")
		must(t, err)
		if ci.Partitions != 2 {
			t.Fatalf("consumer info %+v", ci)
		}
		c.Close()
		must(t, b.DeleteConsumer(ctx, name, "billing"))
		if err := b.DeleteConsumer(ctx, name, "billing"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleting twice: %v", err)
		}
		must(t, b.DeleteStream(ctx, name))
		if _, err := b.StreamInfo(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("info after delete: %v", err)
		}
		if err := b.DeleteStream(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("delete twice: %v", err)
		}
	})
}

// Two members of one durable consumer share the partitions: every record reaches
// the group; an ephemeral consumer from an offset replays with a filter.
func TestStreamConsumerGroupAndEphemeral(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		ctx := testCtx(t)
		name := unique("events")
		must(t, b.CreateStream(ctx, StreamConfig{Name: name, Subjects: []string{name + ".>"}, Partitions: 4}))
		must(t, b.CreateConsumer(ctx, name, ConsumerConfig{Durable: "group", Deliver: DeliverAll}))
		m1, err := b.Consume(ctx, name, "group")
		must(t, err)
		defer m1.Close()
		m2, err := b.Consume(ctx, name, "group")
		must(t, err)
		defer m2.Close()
		const count = 40
		recs := make([]Record, count)
		for i := range recs {
			sub := name + ".a"
			if i%2 == 1 {
				sub = name + ".b"
			}
			recs[i] = Record{Subject: sub, Key: []byte{byte(i)}, Data: []byte{byte(i)}}
		}
		_, err = b.PublishRecords(ctx, recs...)
		must(t, err)
		// Each record reaches the group at least once (a rebalance may hand a record
		// a member had not acknowledged to the other), and both members take part.
		seen := map[byte]int{}
		perMember := map[*Consumer]int{}
		for len(seen) < count {
			for _, m := range []*Consumer{m1, m2} {
				short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
				msgs, err := m.Fetch(short, 0)
				cancel()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					t.Fatal(err)
				}
				for _, r := range msgs {
					seen[r.Data[0]]++
					perMember[m]++
					must(t, r.Ack())
					r.Release()
				}
			}
			if ctx.Err() != nil {
				t.Fatalf("only %d of %d records", len(seen), count)
			}
		}
		if perMember[m1] == 0 || perMember[m2] == 0 {
			t.Fatalf("the group did not share the partitions: %d and %d records", perMember[m1], perMember[m2])
		}

		eph, err := b.ConsumeEphemeral(ctx, name, ConsumerConfig{Deliver: DeliverOffset(0), Filter: name + ".b", NoAck: true})
		must(t, err)
		defer eph.Close()
		for got := 0; got < count/2; got++ {
			r, err := eph.Next(ctx)
			must(t, err)
			if !strings.HasSuffix(r.Subject, ".b") {
				t.Fatalf("the filter let %q through", r.Subject)
			}
			r.Release()
		}
		if _, err := b.ConsumeEphemeral(ctx, name, ConsumerConfig{Deliver: "sometime"}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("a bad deliver policy: %v", err)
		}
		if _, err := b.Consume(ctx, "no-such-stream", "group"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("consume an unknown stream: %v", err)
		}
		must(t, b.DeleteStream(ctx, name))
	})
}

// Bad definitions are ErrInvalidArgument and the message names the problem.
func TestStreamErrors(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		ctx := testCtx(t)
		err := b.CreateStream(ctx, StreamConfig{Name: unique("x"), Subjects: []string{"y.>"}, Durability: "sometimes"})
		var e *Error
		if !errors.As(err, &e) || e.Status != StatusInvalidArgument || !strings.Contains(e.Message, "durability") {
			t.Fatalf("a bad durability: %v", err)
		}
		if err := b.UpdateStream(ctx, StreamConfig{Name: unique("none"), Subjects: []string{unique("z") + ".>"}}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("update of an unknown stream: %v", err)
		}
		if _, err := b.PublishRecords(ctx, Record{Subject: "bad subject"}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("an invalid subject: %v", err)
		}
		if _, err := b.PublishRecords(ctx, Record{Subject: "a\x00b"}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("a NUL in a subject: %v", err)
		}
		if err := b.CreateConsumer(ctx, unique("nostream"), ConsumerConfig{Durable: "d"}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("consumer of an unknown stream: %v", err)
		}
		if _, err := b.ConsumerInfo(ctx, unique("nostream"), "d"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("info of an unknown consumer: %v", err)
		}
		if _, err := b.PublishRecords(ctx); err != nil {
			t.Fatalf("an empty batch: %v", err)
		}
	})
}

// An ephemeral consumer from a time gets only the records stored at or after it;
// one with DeliverNew gets only records stored after it started.
func TestStreamDeliverTimeAndNew(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		ctx := testCtx(t)
		name := unique("timed")
		must(t, b.CreateStream(ctx, StreamConfig{Name: name, Subjects: []string{name + ".>"}}))
		_, err := b.PublishRecords(ctx, Record{Subject: name + ".x", Data: []byte("old")})
		must(t, err)
		time.Sleep(20 * time.Millisecond) // the timestamps are in milliseconds
		from := time.Now()
		fresh, err := b.ConsumeEphemeral(ctx, name, ConsumerConfig{Deliver: DeliverNew, NoAck: true})
		must(t, err)
		defer fresh.Close()
		_, err = b.PublishRecords(ctx, Record{Subject: name + ".x", Data: []byte("new")})
		must(t, err)
		for _, deliver := range []string{DeliverTime(from)} {
			c, err := b.ConsumeEphemeral(ctx, name, ConsumerConfig{Deliver: deliver, NoAck: true})
			must(t, err)
			m, err := c.Next(ctx)
			must(t, err)
			if string(m.Data) != "new" || m.Timestamp.Before(from.Truncate(time.Millisecond)) {
				t.Fatalf("%s delivered %q stored %v", deliver, m.Data, m.Timestamp)
			}
			c.Close()
		}
		m, err := fresh.Next(ctx)
		must(t, err)
		if string(m.Data) != "new" {
			t.Fatalf("DeliverNew delivered %q", m.Data)
		}
		must(t, b.DeleteStream(ctx, name))
	})
}
