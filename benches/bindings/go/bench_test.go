// Package bindingsbench is the Go program of the bindings peer benchmark
// (benches/bindings/run.sh; the contract is at its top): the ringbroker Go binding,
// embedded and connected to a ringbrokerd, against the official NATS client nats.go,
// measured as Go benchmarks. `run` in this folder runs them and turns each result
// line into the contract's JSON.
//
// Every measurement stops at b.N messages or after BENCH_SECONDS (default 5), so
// `-benchtime` is a large count (a ceiling) and BENCH_SECONDS is the cap. Systems are
// skipped when RINGBROKER_URL or NATS_URL is empty; the embedded broker always runs
// (2 shards, unpinned unless BENCH_PIN_TO_CORES=true: see openEmbedded).
// Metrics: msgs/s, p50-us and p99-us (request-reply), sent and received, and ns/op
// per message received.
package bindingsbench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"example.invalid/ringbroker/bindings/go/ringbroker"
	"github.com/nats-io/nats.go"
)

const (
	payloadLen = 64
	batchLen   = 256 // messages per PublishBatch
	// A flow is over when everything arrived, or nothing new came for quietPeriod,
	// or drainMax after its last publish.
	quietPeriod = 2 * time.Second
	drainMax    = 10 * time.Second
	// requestTimeout bounds each request (and each ringbrokerd round trip).
	requestTimeout = 2 * time.Second
	// backoff is the pause after a publish refused as saturated (ErrBackpressure):
	// retrying at once measured no faster and burnt the engine's CPU.
	backoff = 20 * time.Microsecond
	// setupTimeout bounds connecting, subscribing and the first working message.
	setupTimeout = 10 * time.Second
)

var (
	benchFor      = secondsFromEnv("BENCH_SECONDS", 5)
	ringbrokerURL = os.Getenv("RINGBROKER_URL")
	natsURL       = os.Getenv("NATS_URL")
	pinShards     = os.Getenv("BENCH_PIN_TO_CORES") == "true"
)

func secondsFromEnv(name string, def float64) time.Duration {
	s := def
	if v := os.Getenv(name); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			fmt.Fprintf(os.Stderr, "%s=%q is not a positive number of seconds; using %v\n", name, v, def)
		} else {
			s = f
		}
	}
	return time.Duration(s * float64(time.Second))
}

// Payloads: the first byte tells data from the probes sent until a route works.
var (
	dataPayload  = payload('d')
	probePayload = payload('p')
)

func payload(first byte) []byte {
	p := make([]byte, payloadLen)
	p[0] = first
	for i := 1; i < len(p); i++ {
		p[i] = byte('a' + i%26)
	}
	return p
}

func isProbe(data []byte) bool { return len(data) > 0 && data[0] == 'p' }

var subjectSeq atomic.Uint64

// uniqueSubject is a subject no other measurement (or earlier run against the same
// server) uses.
func uniqueSubject(what string) string {
	return fmt.Sprintf("bench.go.%d.%d.%s", os.Getpid(), subjectSeq.Add(1), what)
}

// notes collects what went wrong during a measurement, from any goroutine, and logs
// it with b.Log when the measurement ends: writing to stderr meanwhile would split
// the result line, whose name the testing package prints before the run.
type notes struct {
	b     *testing.B
	mu    sync.Mutex
	lines []string
	done  bool
}

// newNotes registers the flush as b's first cleanup, so it runs last.
func newNotes(b *testing.B) *notes {
	n := &notes{b: b}
	b.Cleanup(n.flush)
	return n
}

func (n *notes) add(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done { // a late callback: the measurement is over
		fmt.Fprintf(os.Stderr, "%s: %s\n", n.b.Name(), line)
		return
	}
	n.lines = append(n.lines, line)
}

func (n *notes) flush() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.done = true
	for _, l := range n.lines {
		n.b.Log(l)
	}
}

// ---- Benchmarks ----------------------------------------------------------------

// BenchmarkPubSub: one subscriber, one publisher sending 64-byte messages one at a
// time as fast as Publish returns.
func BenchmarkPubSub(b *testing.B) {
	b.Run("ringbroker-embedded", func(b *testing.B) {
		br := openEmbedded(b)
		rbFlow(b, br, br, 1)
	})
	b.Run("ringbroker-remote", func(b *testing.B) {
		need(b, ringbrokerURL, "RINGBROKER_URL")
		rbFlow(b, connectRB(b, "bench-sub"), connectRB(b, "bench-pub"), 1)
	})
	b.Run("nats", func(b *testing.B) {
		need(b, natsURL, "NATS_URL")
		natsPubSub(b)
	})
}

// BenchmarkRequestReply: sequential requests from one goroutine to an echoing
// responder in this process (its own connection when remote).
func BenchmarkRequestReply(b *testing.B) {
	b.Run("ringbroker-embedded", func(b *testing.B) {
		br := openEmbedded(b)
		rbRequestReply(b, br, br)
	})
	b.Run("ringbroker-remote", func(b *testing.B) {
		need(b, ringbrokerURL, "RINGBROKER_URL")
		rbRequestReply(b, connectRB(b, "bench-responder"), connectRB(b, "bench-requester"))
	})
	b.Run("nats", func(b *testing.B) {
		need(b, natsURL, "NATS_URL")
		natsRequestReply(b)
	})
}

// BenchmarkPublishBatch: PublishBatch of 256 messages, received with Fetch
// (ringbroker only: NATS has no batch publish).
func BenchmarkPublishBatch(b *testing.B) {
	b.Run("ringbroker-embedded", func(b *testing.B) {
		br := openEmbedded(b)
		rbFlow(b, br, br, batchLen)
	})
	b.Run("ringbroker-remote", func(b *testing.B) {
		need(b, ringbrokerURL, "RINGBROKER_URL")
		rbFlow(b, connectRB(b, "bench-sub"), connectRB(b, "bench-pub"), batchLen)
	})
}

func need(b *testing.B, url, name string) {
	if url == "" {
		b.Skipf("%s is not set", name)
	}
}

// ---- One-way flows (pub/sub, publish-batch) ------------------------------------

// flow counts what a receiver took and when the last message came.
type flow struct {
	t0       time.Time
	received atomic.Int64
	lastNs   atomic.Int64 // when the last data message came, ns after t0
	probed   atomic.Bool  // a probe came through: the route works
}

func newFlow() *flow { return &flow{t0: time.Now()} }

// take counts n data messages received now.
func (f *flow) take(n int) {
	if n > 0 {
		f.received.Add(int64(n))
		f.lastNs.Store(int64(time.Since(f.t0)))
	}
}

// publisher is one side of a flow: publish sends k data messages (k ≤ perCall),
// probe sends one probe, flush (may be nil) pushes out what is buffered.
type publisher struct {
	perCall int
	publish func(k int) error
	probe   func() error
	flush   func() error
	// retryable says an error means "saturated, try again" (it is counted).
	retryable func(error) bool
}

// runFlow waits until a probe gets through, publishes up to b.N messages (stopping
// at benchFor; a publish refused as saturated is retried and counted), flushes,
// waits for the receiver and reports the metrics.
func runFlow(b *testing.B, nt *notes, f *flow, p publisher) {
	waitFor(b, "a probe message to come through", func() bool {
		if err := p.probe(); err != nil && (p.retryable == nil || !p.retryable(err)) {
			b.Fatalf("probe publish: %v", err)
		}
		return f.probed.Load()
	})
	startNs := int64(time.Since(f.t0))
	deadline := f.t0.Add(time.Duration(startNs) + benchFor)
	sent, calls, retries := 0, 0, 0
	for sent < b.N {
		k := min(p.perCall, b.N-sent)
		if err := p.publish(k); err != nil {
			if p.retryable == nil || !p.retryable(err) {
				b.Fatalf("publish after %d messages: %v", sent, err)
			}
			retries++
			time.Sleep(backoff)
			if time.Now().After(deadline) {
				break
			}
			continue
		}
		sent += k
		if calls++; calls&63 == 0 && time.Now().After(deadline) {
			break
		}
	}
	if p.flush != nil {
		if err := p.flush(); err != nil {
			nt.add("flush: %v", err)
		}
	}
	// Wait for everything, or until nothing new came for quietPeriod.
	last, lastChange := f.received.Load(), time.Now()
	hardStop := lastChange.Add(drainMax)
	for {
		got := f.received.Load()
		now := time.Now()
		if got >= int64(sent) || now.After(hardStop) {
			break
		}
		if got != last {
			last, lastChange = got, now
		} else if now.Sub(lastChange) >= quietPeriod {
			break
		}
		time.Sleep(time.Millisecond)
	}
	received := f.received.Load()
	elapsed := time.Duration(f.lastNs.Load() - startNs)
	rate := 0.0
	if received > 0 && elapsed > 0 {
		rate = float64(received) / elapsed.Seconds()
		b.ReportMetric(float64(elapsed.Nanoseconds())/float64(received), "ns/op")
	}
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(float64(sent), "sent")
	b.ReportMetric(float64(received), "received")
	if retries > 0 {
		b.ReportMetric(float64(retries), "retries")
	}
	if received < int64(sent) && b.N > 1 {
		nt.add("%d of %d messages did not arrive", int64(sent)-received, sent)
	}
}

// waitFor calls cond every 10 ms until it holds, at most setupTimeout.
func waitFor(b *testing.B, what string, cond func() bool) {
	stop := time.Now().Add(setupTimeout)
	for !cond() {
		if time.Now().After(stop) {
			b.Fatalf("no %s within %v", what, setupTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---- ringbroker ----------------------------------------------------------------

// openEmbedded opens a broker of 2 shards on a temporary directory. Its shard threads
// are not pinned to cores unless BENCH_PIN_TO_CORES=true (the library's
// default): the benchmark's own goroutines, the servers and the other clients share
// the machine's cores, and on a 2-core machine pinned shards measured request-reply
// latencies several times higher (they wait for their one core).
func openEmbedded(b *testing.B) *ringbroker.Broker {
	br, err := ringbroker.Open(ringbroker.Config{DataDir: b.TempDir(), Shards: 2,
		DisablePinning: !pinShards, RequestTimeout: requestTimeout})
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() { br.Close() })
	return br
}

func connectRB(b *testing.B, name string) *ringbroker.Broker {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	br, err := ringbroker.Connect(ctx, ringbrokerURL,
		ringbroker.WithClientName(name), ringbroker.WithRequestTimeout(requestTimeout))
	if err != nil {
		b.Fatalf("Connect(%s): %v", ringbrokerURL, err)
	}
	b.Cleanup(func() { br.Close() })
	return br
}

func subscribeRB(b *testing.B, br *ringbroker.Broker, subject string) *ringbroker.Consumer {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	sub, err := br.Subscribe(ctx, subject)
	if err != nil {
		b.Fatalf("Subscribe: %v", err)
	}
	return sub
}

// receiveRB runs the receiver of a flow until sub is closed: Next one message at a
// time (pub/sub) or Fetch up to 128 at a time (batches). Every message is released
// at once. done closes when it returns. (Closing the consumer is how a receiver with
// a context that never ends is stopped: the cheapest way to wait.)
func receiveRB(nt *notes, sub *ringbroker.Consumer, f *flow, batch bool, done chan<- struct{}) {
	defer close(done)
	ctx := context.Background()
	fail := func(err error) {
		if !errors.Is(err, ringbroker.ErrClosed) {
			nt.add("receive: %v", err)
		}
	}
	if !batch {
		for {
			m, err := sub.Next(ctx)
			if err != nil {
				fail(err)
				return
			}
			if isProbe(m.Data) {
				f.probed.Store(true)
			} else {
				f.take(1)
			}
			m.Release()
		}
	}
	for {
		msgs, err := sub.Fetch(ctx, 0)
		if err != nil {
			fail(err)
			return
		}
		n := 0
		for _, m := range msgs {
			if isProbe(m.Data) {
				f.probed.Store(true)
			} else {
				n++
			}
			m.Release()
		}
		f.take(n)
	}
}

func isBackpressure(err error) bool { return errors.Is(err, ringbroker.ErrBackpressure) }

// rbFlow measures a flow from pub to a subscriber on sub (the same broker when
// embedded): Publish per message (perCall 1) or PublishBatch of perCall.
func rbFlow(b *testing.B, sub, pub *ringbroker.Broker, perCall int) {
	nt := newNotes(b)
	subject := uniqueSubject("flow")
	consumer := subscribeRB(b, sub, subject)
	f := newFlow()
	done := make(chan struct{})
	go receiveRB(nt, consumer, f, perCall > 1, done)
	defer func() { consumer.Close(); <-done }()

	p := publisher{
		perCall:   perCall,
		probe:     func() error { return pub.Publish(subject, probePayload) },
		retryable: isBackpressure,
	}
	if perCall == 1 {
		p.publish = func(int) error { return pub.Publish(subject, dataPayload) }
	} else {
		batch := make([]ringbroker.SubjectMsg, perCall)
		for i := range batch {
			batch[i] = ringbroker.SubjectMsg{Subject: subject, Data: dataPayload}
		}
		p.publish = func(k int) error { return pub.PublishBatch(batch[:k]) }
	}
	runFlow(b, nt, f, p)
}

// rbRequestReply: a responder goroutine on responder echoes each request (Next,
// Respond, Release); requests go from requester one after another.
func rbRequestReply(b *testing.B, responder, requester *ringbroker.Broker) {
	nt := newNotes(b)
	subject := uniqueSubject("rr")
	sub := subscribeRB(b, responder, subject)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := sub.Next(context.Background())
			if err != nil {
				if !errors.Is(err, ringbroker.ErrClosed) {
					nt.add("responder: %v", err)
				}
				return
			}
			if err := m.Respond(m.Data); err != nil {
				nt.add("respond: %v", err)
			}
			m.Release()
		}
	}()
	defer func() { sub.Close(); <-done }()

	// A context without a deadline: the broker's request timeout bounds each request.
	bg := context.Background()
	runRequests(b, nt, func() error {
		r, err := requester.Request(bg, subject, dataPayload)
		if err != nil {
			return err
		}
		n := len(r.Data)
		r.Release()
		if n != payloadLen {
			return fmt.Errorf("a reply of %d bytes", n)
		}
		return nil
	})
}

// runRequests makes requests one after another until b.N or benchFor, after a first
// one succeeded; reports latency percentiles over every successful request.
func runRequests(b *testing.B, nt *notes, request func() error) {
	var lastErr error
	waitFor(b, "reply to a first request", func() bool {
		lastErr = request()
		return lastErr == nil
	})
	lat := make([]time.Duration, 0, min(b.N, 1<<20))
	sent, failed := 0, 0
	start := time.Now()
	deadline := start.Add(benchFor)
	for sent < b.N {
		t := time.Now()
		err := request()
		end := time.Now()
		sent++
		if err != nil {
			if failed++; failed <= 3 {
				nt.add("request %d: %v", sent, err)
			}
		} else {
			lat = append(lat, end.Sub(t))
		}
		if end.After(deadline) {
			break
		}
	}
	elapsed := time.Since(start)
	if len(lat) == 0 {
		b.Fatalf("no request succeeded (%d failed)", failed)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(len(lat)), "ns/op")
	b.ReportMetric(micros(percentile(lat, 50)), "p50-us")
	b.ReportMetric(micros(percentile(lat, 99)), "p99-us")
	b.ReportMetric(float64(sent), "sent")
	b.ReportMetric(float64(len(lat)), "received")
	if failed > 0 {
		nt.add("%d of %d requests failed", failed, sent)
	}
}

// percentile is the nearest-rank p-th percentile of sorted.
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100 // ceil(n·p/100), 1-based
	return sorted[max(i, 1)-1]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// ---- nats.go -------------------------------------------------------------------

// natsEvents counts what the client reports asynchronously (slow consumer, dropped
// connections): reported, never hidden.
type natsEvents struct {
	slow        atomic.Int64
	disconnects atomic.Int64
}

func natsConnect(b *testing.B, nt *notes, name string, ev *natsEvents) *nats.Conn {
	nc, err := nats.Connect(natsURL,
		nats.Name(name),
		nats.Timeout(setupTimeout),
		nats.FlusherTimeout(setupTimeout),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				if ev.slow.Add(1) == 1 {
					nt.add("%s: %v", name, err)
				}
				return
			}
			nt.add("%s: %v", name, err)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: closed by this program
				ev.disconnects.Add(1)
				nt.add("%s disconnected: %v", name, err)
			}
		}),
	)
	if err != nil {
		b.Fatalf("nats.Connect(%s): %v", natsURL, err)
	}
	b.Cleanup(nc.Close)
	return nc
}

func (ev *natsEvents) report(b *testing.B) {
	if n := ev.slow.Load(); n > 0 {
		b.ReportMetric(float64(n), "slow-consumer")
	}
	if n := ev.disconnects.Load(); n > 0 {
		b.ReportMetric(float64(n), "disconnects")
	}
}

// natsPubSub: the subscriber (its own connection) takes messages in a callback, the
// fastest way nats.go delivers, with no client-side pending limit so the client
// never drops; the publisher publishes one message at a time (nats.go buffers and
// its flusher writes), then Flush.
func natsPubSub(b *testing.B) {
	var ev natsEvents
	nt := newNotes(b)
	subConn := natsConnect(b, nt, "bench-sub", &ev)
	pubConn := natsConnect(b, nt, "bench-pub", &ev)
	subject := uniqueSubject("flow")
	f := newFlow()
	sub, err := subConn.Subscribe(subject, func(m *nats.Msg) {
		if isProbe(m.Data) {
			f.probed.Store(true)
			return
		}
		f.take(1)
	})
	if err != nil {
		b.Fatalf("Subscribe: %v", err)
	}
	defer sub.Unsubscribe()
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		b.Fatalf("SetPendingLimits: %v", err)
	}
	if err := subConn.Flush(); err != nil {
		b.Fatalf("Flush: %v", err)
	}
	runFlow(b, nt, f, publisher{
		perCall: 1,
		publish: func(int) error { return pubConn.Publish(subject, dataPayload) },
		probe:   func() error { return pubConn.Publish(subject, probePayload) },
		flush:   pubConn.Flush,
	})
	if n, _ := sub.Dropped(); n > 0 {
		b.ReportMetric(float64(n), "client-dropped")
	}
	ev.report(b)
}

// natsRequestReply: the responder (its own connection) echoes in a callback; the
// requester uses Request (one shared reply subscription, the client's default).
func natsRequestReply(b *testing.B) {
	var ev natsEvents
	nt := newNotes(b)
	respConn := natsConnect(b, nt, "bench-responder", &ev)
	reqConn := natsConnect(b, nt, "bench-requester", &ev)
	subject := uniqueSubject("rr")
	sub, err := respConn.Subscribe(subject, func(m *nats.Msg) {
		if err := m.Respond(m.Data); err != nil {
			nt.add("respond: %v", err)
		}
	})
	if err != nil {
		b.Fatalf("Subscribe: %v", err)
	}
	defer sub.Unsubscribe()
	if err := respConn.Flush(); err != nil {
		b.Fatalf("Flush: %v", err)
	}
	runRequests(b, nt, func() error {
		r, err := reqConn.Request(subject, dataPayload, requestTimeout)
		if err != nil {
			return err
		}
		if len(r.Data) != payloadLen {
			return fmt.Errorf("a reply of %d bytes", len(r.Data))
		}
		return nil
	})
	ev.report(b)
}
