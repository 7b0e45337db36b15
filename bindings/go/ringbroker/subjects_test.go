package ringbroker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
	"unsafe"
)

// Publish, PublishMsg (reply and headers) and PublishBatch reach a wildcard
// subscription through Next, Fetch and the Messages channel, in order.
func TestSubjectsPublishSubscribe(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		ctx := testCtx(t)
		root := unique("gs")
		sub, err := b.Subscribe(ctx, root+".*")
		must(t, err)
		defer sub.Close()
		if sub.Kind() != KindSubject {
			t.Fatalf("kind %v", sub.Kind())
		}
		must(t, b.Publish(root+".one", []byte("hello")))
		m, err := sub.Next(ctx)
		must(t, err)
		if m.Subject != root+".one" || string(m.Data) != "hello" || m.Kind != KindSubject {
			t.Fatalf("got %q %q %v", m.Subject, m.Data, m.Kind)
		}
		if !m.detached || m.c != nil {
			t.Fatal("a subject message without headers keeps no library message")
		}
		m.Release()
		m.Release() // twice is a no-op
		if string(m.Data) != "hello" {
			t.Fatal("Data must stay valid after Release")
		}

		must(t, b.PublishMsg(SubjectMsg{Subject: root + ".two", Reply: root + ".inbox",
			Headers: []Header{{Name: "Trace", Value: []byte("t-1")}}, Data: []byte("with headers")}))
		m, err = sub.Next(ctx)
		must(t, err)
		if m.Reply != root+".inbox" {
			t.Fatalf("reply %q", m.Reply)
		}
		if m.detached {
			t.Fatal("a message with headers keeps its library message (read by Headers)")
		}
		if v, ok := m.Header("Trace"); !ok || string(v) != "t-1" {
			hs, herr := m.Headers()
			t.Fatalf("header Trace: %q %v (all: %v, %v)", v, ok, hs, herr)
		}
		m.Release()
		if _, err := m.Headers(); !errors.Is(err, ErrReleased) {
			t.Fatalf("Headers after Release: %v", err)
		}

		const count = 300
		batch := make([]SubjectMsg, count)
		for i := range batch {
			batch[i] = SubjectMsg{Subject: root + ".batch", Data: []byte(fmt.Sprint(i))}
		}
		must(t, b.PublishBatch(batch))
		got := 0
		for got < count {
			msgs, err := sub.Fetch(ctx, 50)
			must(t, err)
			if len(msgs) == 0 || len(msgs) > 50 {
				t.Fatalf("fetch returned %d", len(msgs))
			}
			for _, m := range msgs {
				if string(m.Data) != fmt.Sprint(got) {
					t.Fatalf("message %d out of order: %q", got, m.Data)
				}
				got++
				m.Release()
			}
		}

		must(t, b.Publish(root+".chan", []byte("via channel")))
		select {
		case m := <-sub.Messages():
			if string(m.Data) != "via channel" {
				t.Fatalf("channel got %q", m.Data)
			}
			m.Release()
		case <-ctx.Done():
			t.Fatal("nothing on the Messages channel")
		}
		// Next now reads from the channel.
		must(t, b.Publish(root+".chan", []byte("next after channel")))
		m, err = sub.Next(ctx)
		must(t, err)
		if string(m.Data) != "next after channel" {
			t.Fatalf("got %q", m.Data)
		}
		must(t, sub.Close())
		if _, ok := <-sub.Messages(); ok {
			t.Fatal("the channel must close with the consumer")
		}
		if !errors.Is(sub.Err(), ErrClosed) {
			t.Fatalf("Err after Close: %v", sub.Err())
		}
		if _, err := sub.Next(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("Next after Close: %v", err)
		}
	})
}

// A queue group shares the messages: each goes to exactly one member.
func TestSubjectsQueueGroup(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		ctx := testCtx(t)
		subject := unique("qg")
		a, err := b.QueueSubscribe(ctx, subject, "workers")
		must(t, err)
		defer a.Close()
		c, err := b.QueueSubscribe(ctx, subject, "workers")
		must(t, err)
		defer c.Close()
		const count = 100
		batch := make([]SubjectMsg, count)
		for i := range batch {
			batch[i] = SubjectMsg{Subject: subject, Data: []byte{byte(i)}}
		}
		must(t, b.PublishBatch(batch))
		seen := make(map[byte]int)
		for total := 0; total < count; {
			for _, s := range []*Consumer{a, c} {
				short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
				msgs, err := s.Fetch(short, 0)
				cancel()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					t.Fatal(err)
				}
				for _, m := range msgs {
					seen[m.Data[0]]++
					total++
					m.Release()
				}
			}
			if ctx.Err() != nil {
				t.Fatalf("only %d of %d messages arrived", total, count)
			}
		}
		for i := 0; i < count; i++ {
			if seen[byte(i)] != 1 {
				t.Fatalf("message %d delivered %d times", i, seen[byte(i)])
			}
		}
	})
}

// Request gets the responder's answer; a subject with no subscriber is
// ErrNoResponders; a silent responder is ErrTimeout under the broker's default.
func TestRequestReply(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		ctx := testCtx(t)
		subject := unique("rr")
		sub, err := b.Subscribe(ctx, subject)
		must(t, err)
		defer sub.Close()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range sub.Messages() {
				_ = m.Respond(append([]byte("re: "), m.Data...))
				m.Release()
			}
		}()
		reply, err := b.Request(ctx, subject, []byte("ping"))
		must(t, err)
		if string(reply.Data) != "re: ping" {
			t.Fatalf("reply %q", reply.Data)
		}
		if err := reply.Respond([]byte("x")); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("Respond to a message without reply subject: %v", err)
		}
		if err := reply.Ack(); !errors.Is(err, ErrWrongKind) {
			t.Fatalf("Ack of a reply: %v", err)
		}
		reply.Release()

		_, err = b.Request(ctx, unique("nobody"), nil)
		var e *Error
		if !errors.Is(err, ErrNoResponders) || !errors.As(err, &e) || e.Message == "" {
			t.Fatalf("no responders: %v", err)
		}
		sub.Close()
		wg.Wait()
	})
}

// Respond answers through the reply subject a raw publish carries.
func TestRespondToPublishedReply(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		ctx := testCtx(t)
		root := unique("rp")
		inbox, err := b.Subscribe(ctx, root+".inbox")
		must(t, err)
		defer inbox.Close()
		svc, err := b.Subscribe(ctx, root+".svc")
		must(t, err)
		defer svc.Close()
		must(t, b.PublishMsg(SubjectMsg{Subject: root + ".svc", Reply: root + ".inbox", Data: []byte("q")}))
		m, err := svc.Next(ctx)
		must(t, err)
		must(t, m.Respond([]byte("a")))
		m.Release()
		if err := m.Respond(nil); !errors.Is(err, ErrReleased) {
			t.Fatalf("Respond after Release: %v", err)
		}
		r, err := inbox.Next(ctx)
		must(t, err)
		if !bytes.Equal(r.Data, []byte("a")) {
			t.Fatalf("answer %q", r.Data)
		}
	})
}

// 1000 goroutines request at once through one handle; each gets its own reply.
func TestRequestReplyThousandGoroutines(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		ctx := testCtx(t)
		subject := unique("many")
		responders := make([]*Consumer, 2)
		var wg sync.WaitGroup
		for i := range responders {
			sub, err := b.QueueSubscribe(ctx, subject, "echo")
			must(t, err)
			responders[i] = sub
			wg.Add(1)
			go func() {
				defer wg.Done()
				for m := range sub.Messages() {
					_ = m.Respond(m.Data)
					m.Release()
				}
			}()
		}
		const goroutines = 1000
		errs := make(chan error, goroutines)
		var reqs sync.WaitGroup
		for i := 0; i < goroutines; i++ {
			reqs.Add(1)
			go func(i int) {
				defer reqs.Done()
				want := fmt.Sprintf("request %d", i)
				r, err := b.Request(ctx, subject, []byte(want))
				if err != nil {
					errs <- fmt.Errorf("request %d: %w", i, err)
					return
				}
				if string(r.Data) != want {
					errs <- fmt.Errorf("request %d got %q", i, r.Data)
				}
				r.Release()
			}(i)
		}
		reqs.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		for _, s := range responders {
			s.Close()
		}
		wg.Wait()
	})
}

// A fetched batch's detached messages share one slab of Msgs and one of bytes
// (detachedSlab): in a batch that mixes them with messages that keep their library
// message, every message keeps its order and fields, a repeated subject is shared,
// and an append to one message's Data cannot reach the next one's bytes.
func TestFetchedBatchOfMixedMessages(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		ctx := testCtx(t)
		root := unique("mix")
		sub, err := b.Subscribe(ctx, root+".>")
		must(t, err)
		defer sub.Close()
		sent := []SubjectMsg{
			{Subject: root + ".a", Data: []byte("one")},
			{Subject: root + ".a", Data: []byte("two"), Reply: root + ".r1"},
			{Subject: root + ".b", Data: []byte("three"), Headers: []Header{{Name: "h", Value: []byte("v")}}},
			{Subject: root + ".a", Data: nil},
			{Subject: root + ".b", Data: []byte("five")},
		}
		must(t, b.PublishBatch(sent))
		time.Sleep(time.Second) // all five arrive, even on a loaded machine: one fetch takes them
		var got []*Msg
		for len(got) < len(sent) {
			m, err := sub.Next(ctx)
			must(t, err)
			got = append(got, m)
		}
		for i, m := range got {
			s := sent[i]
			if m.Subject != s.Subject || m.Reply != s.Reply || string(m.Data) != string(s.Data) || m.Kind != KindSubject {
				t.Fatalf("message %d: %q %q %q %v, sent %q %q %q", i, m.Subject, m.Reply, m.Data, m.Kind, s.Subject, s.Reply, s.Data)
			}
			if m.detached != (len(s.Headers) == 0) {
				t.Fatalf("message %d: detached %v", i, m.detached)
			}
		}
		if unsafe.StringData(got[0].Subject) != unsafe.StringData(got[1].Subject) {
			t.Fatal("a repeated subject is copied again")
		}
		one := got[0].Data
		if cap(one) != len(one) {
			t.Fatalf("Data has room past its end (cap %d, len %d)", cap(one), len(one))
		}
		_ = append(one, "XXXXXXXX"...)
		if string(got[1].Data) != "two" || got[1].Reply != root+".r1" {
			t.Fatalf("an append to one message's Data reached the next: %q %q", got[1].Data, got[1].Reply)
		}
		if err := got[0].Ack(); !errors.Is(err, ErrWrongKind) {
			t.Fatalf("Ack of a subject message: %v", err)
		}
		inbox, err := b.Subscribe(ctx, root+".r1")
		must(t, err)
		defer inbox.Close()
		must(t, got[1].Respond([]byte("answer")))
		r, err := inbox.Next(ctx)
		must(t, err)
		if string(r.Data) != "answer" {
			t.Fatalf("answer %q", r.Data)
		}
		for _, m := range got {
			m.Release()
		}
		if string(got[4].Data) != "five" {
			t.Fatal("Data must stay valid after Release")
		}
	})
}
