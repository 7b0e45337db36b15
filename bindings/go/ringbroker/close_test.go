package ringbroker

// Broker.Close and what is in flight when it runs: asynchronous publishes get their
// real outcome (the handle's completions are drained before it closes), a dropped
// connection's publishes their ErrDisconnected, what outlives the bound an error
// wrapping ErrClosed; a consumer being made never sees the handle close under it.

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// publishUntilClosed runs publishers that publish batches of records until a call
// fails, closes b once each has had `rounds` batches answered, and returns how many
// records were reported stored and the calls' final errors.
func publishUntilClosed(t *testing.T, b *Broker, subject string) (stored uint64, errs []error) {
	t.Helper()
	const publishers, batch, rounds = 8, 32, 3
	ctx := testCtx(t)
	var ok atomic.Uint64
	var warm sync.WaitGroup
	warm.Add(publishers)
	final := make(chan error, publishers)
	for p := 0; p < publishers; p++ {
		go func() {
			recs := make([]Record, batch)
			for i := range recs {
				recs[i] = Record{Subject: subject, Data: []byte("payload")}
			}
			for n := 1; ; n++ {
				res, err := b.PublishRecords(ctx, recs...)
				for _, r := range res {
					if r.Err == nil {
						ok.Add(1)
					}
				}
				if n == rounds {
					warm.Done()
				}
				if res == nil && err != nil {
					if n < rounds {
						warm.Done()
					}
					final <- err
					return
				}
			}
		}()
	}
	warm.Wait()
	within(t, waitMax, "Broker.Close", func() { must(t, b.Close()) })
	for p := 0; p < publishers; p++ {
		errs = append(errs, <-final)
	}
	return ok.Load(), errs
}

// Publishes in flight when Close starts are answered, not reported failed: every
// record the stream holds afterwards was reported stored, and no call returns
// "outcome unknown".
func TestClosePublishesInFlightGetTheirOutcome(t *testing.T) {
	check := func(t *testing.T, reported, held uint64, errs []error) {
		t.Helper()
		for _, err := range errs {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("a publish across Close: %v", err)
			}
			if errors.Is(err, errOutcomeUnknown) {
				t.Errorf("a publish in flight at Close was not answered: %v", err)
			}
		}
		if held != reported {
			t.Fatalf("the stream holds %d records, %d were reported stored", held, reported)
		}
	}
	t.Run("embedded", func(t *testing.T) {
		dir := t.TempDir()
		name := unique("drain")
		b, err := Open(Config{DataDir: dir, Shards: 2, DisablePinning: true})
		must(t, err)
		must(t, b.CreateStream(testCtx(t), StreamConfig{Name: name, Subjects: []string{name + ".>"}}))
		reported, errs := publishUntilClosed(t, b, name+".x")
		again, err := Open(Config{DataDir: dir, Shards: 2, DisablePinning: true})
		must(t, err)
		defer again.Close()
		info, err := again.StreamInfo(testCtx(t), name)
		must(t, err)
		check(t, reported, info.Records, errs)
	})
	t.Run("remote", func(t *testing.T) {
		ctx := testCtx(t)
		name := unique("drain")
		b, err := Connect(ctx, daemonURL)
		must(t, err)
		must(t, b.CreateStream(ctx, StreamConfig{Name: name, Subjects: []string{name + ".>"}}))
		reported, errs := publishUntilClosed(t, b, name+".x")
		other := connectRemote(t)
		info, err := other.StreamInfo(ctx, name)
		must(t, err)
		check(t, reported, info.Records, errs)
		must(t, other.DeleteStream(ctx, name))
	})
}

// stallProxy forwards one connection to the test daemon; stall stops forwarding
// the daemon's answers (they stay unread), cut drops the client's connection.
type stallProxy struct {
	ln      net.Listener
	stalled chan struct{}
	stallMu sync.Once
	mu      sync.Mutex
	conns   []net.Conn
}

func newStallProxy(t *testing.T) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &stallProxy{ln: ln, stalled: make(chan struct{})}
	t.Cleanup(p.close)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", strings.TrimPrefix(daemonURL, "ringbroker://"))
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, d)
			p.mu.Unlock()
			go io.Copy(d, c) // client to daemon, always
			go func() {      // daemon to client, until stalled
				buf := make([]byte, 64<<10)
				for {
					select {
					case <-p.stalled:
						return
					default:
					}
					_ = d.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
					n, err := d.Read(buf)
					if n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil && !isTimeout(err) {
						return
					}
				}
			}()
		}
	}()
	return p
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (p *stallProxy) url() string { return "ringbroker://" + p.ln.Addr().String() }

func (p *stallProxy) stall() {
	p.stallMu.Do(func() { close(p.stalled) })
	time.Sleep(30 * time.Millisecond) // the forwarder leaves its last read
}

func (p *stallProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// connectStalled connects through a proxy, creates a stream, stalls the proxy and
// starts a publish whose answer the proxy holds; it returns the publish's result.
func connectStalled(t *testing.T) (*Broker, *stallProxy, chan error) {
	t.Helper()
	ctx := testCtx(t)
	p := newStallProxy(t)
	b, err := Connect(ctx, p.url(), WithReconnect(false))
	must(t, err)
	t.Cleanup(func() { b.Close() })
	name := unique("stalled")
	must(t, b.CreateStream(ctx, StreamConfig{Name: name, Subjects: []string{name + ".>"}}))
	p.stall()
	got := make(chan error, 1)
	go func() {
		_, err := b.PublishRecord(ctx, Record{Subject: name + ".x", Data: []byte("held")})
		got <- err
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-got:
		t.Fatalf("the publish was answered through a stalled proxy: %v", err)
	default:
	}
	return b, p, got
}

// A connection that drops while Close drains answers its publishes DISCONNECTED:
// the caller sees ErrDisconnected (not ErrClosed), and Close returns at once.
func TestCloseRemoteDisconnectedWhileDraining(t *testing.T) {
	b, p, got := connectStalled(t)
	closed := make(chan error, 1)
	start := time.Now()
	go func() { closed <- b.Close() }()
	time.Sleep(100 * time.Millisecond)
	select {
	case <-closed:
		t.Fatal("Close returned with a publish in flight")
	default:
	}
	p.close()
	select {
	case err := <-got:
		if !errors.Is(err, ErrDisconnected) {
			t.Fatalf("a publish whose connection dropped during Close: %v", err)
		}
	case <-time.After(waitMax):
		t.Fatal("the publish was not answered")
	}
	select {
	case <-closed:
	case <-time.After(waitMax):
		t.Fatal("Close did not return")
	}
	if took := time.Since(start); took > CloseDrainTimeout/2 {
		t.Fatalf("Close took %v", took)
	}
}

// A publish unanswered within the drain bound returns an error wrapping ErrClosed
// that says its outcome is unknown; Close returns after the bound.
func TestCloseDrainIsBounded(t *testing.T) {
	b, _, got := connectStalled(t)
	b.drainTimeout = 300 * time.Millisecond // read by Close, on this goroutine
	within(t, 300*time.Millisecond+2*prompt, "Broker.Close", func() { must(t, b.Close()) })
	select {
	case err := <-got:
		if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "outcome unknown") {
			t.Fatalf("a publish unanswered at Close: %v", err)
		}
	case <-time.After(waitMax):
		t.Fatal("the publish still waits after Close")
	}
}

// A consumer's eventfd is asked for while the broker's handle is held: a Close that
// starts between the subscribe and that call waits for it.
func TestCloseWaitsForAConsumerBeingMade(t *testing.T) {
	bothModes(t, func(t *testing.T, b *Broker) {
		closed := make(chan struct{})
		var inGap atomic.Bool
		var once sync.Once
		hook := func(hb *Broker) {
			if hb != b {
				return
			}
			once.Do(func() {
				go func() {
					b.Close()
					close(closed)
				}()
				select {
				case <-closed:
					inGap.Store(true)
				case <-time.After(200 * time.Millisecond):
				}
			})
		}
		testHookConsumerFD.Store(&hook)
		defer testHookConsumerFD.Store(nil)
		sub, err := b.Subscribe(testCtx(t), unique("gap"))
		if err == nil {
			sub.Close()
		} else if !errors.Is(err, ErrClosed) {
			t.Fatalf("Subscribe across Close: %v", err)
		}
		select {
		case <-closed:
		case <-time.After(waitMax):
			t.Fatal("Close did not return")
		}
		if inGap.Load() {
			t.Fatal("the handle closed between the subscribe and ringbroker_consumer_fd")
		}
	})
}
