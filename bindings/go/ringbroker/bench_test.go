package ringbroker

import (
	"context"
	"slices"
	"testing"
	"time"
)

// benchModes runs f on an embedded broker and on a connection to the test daemon.
func benchModes(b *testing.B, f func(b *testing.B, br *Broker)) {
	b.Run("embedded", func(b *testing.B) {
		br, err := Open(Config{DataDir: b.TempDir(), Shards: 2, DisablePinning: true})
		if err != nil {
			b.Fatal(err)
		}
		defer br.Close()
		f(b, br)
	})
	b.Run("remote", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), waitMax)
		defer cancel()
		br, err := Connect(ctx, daemonURL)
		if err != nil {
			b.Fatal(err)
		}
		defer br.Close()
		f(b, br)
	})
}

// Publish → consume throughput: batches of 128 16-byte messages published with
// PublishBatch and received with Fetch. Subjects are at most once, so the run
// counts what arrived (msgs/s) and reports drops if the engine shed any.
func BenchmarkPublishConsume(b *testing.B) {
	benchModes(b, func(b *testing.B, br *Broker) {
		ctx := context.Background()
		subject := unique("bench")
		sub, err := br.Subscribe(ctx, subject)
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		const batchLen = 128
		batch := make([]SubjectMsg, batchLen)
		for i := range batch {
			batch[i] = SubjectMsg{Subject: subject, Data: make([]byte, 16)}
		}
		received := 0
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i += batchLen {
			for {
				err := br.PublishBatch(batch)
				if err == nil {
					break
				}
				if !errorIs(err, StatusBackpressure) {
					b.Fatal(err)
				}
				time.Sleep(50 * time.Microsecond)
			}
			// Keep at most a few batches in flight: drain what is there.
			for received < i {
				short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
				msgs, err := sub.Fetch(short, 0)
				cancel()
				if err != nil {
					break
				}
				for _, m := range msgs {
					m.Release()
				}
				received += len(msgs)
			}
		}
		for received < b.N {
			short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			msgs, err := sub.Fetch(short, 0)
			cancel()
			if err != nil {
				break // the rest were dropped (at most once)
			}
			for _, m := range msgs {
				m.Release()
			}
			received += len(msgs)
		}
		b.ReportMetric(float64(received)/time.Since(start).Seconds(), "msgs/s")
		b.ReportMetric(float64(b.N-min(received, b.N)), "dropped")
	})
}

// Request-reply round trips from one goroutine to a responder on the Messages
// channel: reports the median and p99 latency.
func BenchmarkRequestReply(b *testing.B) {
	benchModes(b, func(b *testing.B, br *Broker) {
		ctx := context.Background()
		subject := unique("benchrr")
		sub, err := br.Subscribe(ctx, subject)
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for m := range sub.Messages() {
				_ = m.Respond(m.Data)
				m.Release()
			}
		}()
		payload := make([]byte, 16)
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			r, err := br.Request(ctx, subject, payload)
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
			r.Release()
		}
		b.StopTimer()
		sub.Close()
		<-done
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-us")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
	})
}
