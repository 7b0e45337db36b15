package ringbroker

/*
#include <stdlib.h>
#include "ringbroker.h"
*/
import "C"

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// CloseDrainTimeout bounds how long Broker.Close waits for the outcomes of
// asynchronous publishes (PublishRecords, PublishExchange) still in flight when it
// starts; what is still unanswered after it returns an error wrapping ErrClosed,
// its outcome unknown.
const CloseDrainTimeout = 10 * time.Second

// DefaultRequestTimeout bounds a Request whose context has no deadline: the library
// needs a timeout for every request, and a request left waiting forever would keep
// its slot in the engine after its caller gave up.
const DefaultRequestTimeout = 30 * time.Second

// Config configures an embedded broker (Open).
type Config struct {
	// DataDir is where streams and durable queues are stored (required; created if
	// missing, locked so only one broker uses it).
	DataDir string
	// Shards is how many shard threads run the engine; 0 means one per core.
	Shards int
	// DisablePinning leaves shard threads unpinned (the library pins each shard to a
	// core by default). Useful when several brokers share a machine, as in tests.
	DisablePinning bool
	// IdleSpin is how long an idle shard spins before it sleeps (0, the default:
	// at once; at most a second). Spinning trades CPU, and the throughput of what
	// shares the cores, for latency (docs/benchmarks.md). Rounded down to
	// microseconds.
	IdleSpin time.Duration
	// RequestTimeout bounds a Request whose context has no deadline; 0 means
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
}

// ConnectOption configures Connect.
type ConnectOption func(*connectOptions)

type connectOptions struct {
	authToken      string
	clientName     string
	requestTimeout time.Duration
	reconnect      *bool
}

// WithAuthToken sends token to the daemon when connecting.
func WithAuthToken(token string) ConnectOption {
	return func(o *connectOptions) { o.authToken = token }
}

// WithClientName names this connection in the daemon's view.
func WithClientName(name string) ConnectOption {
	return func(o *connectOptions) { o.clientName = name }
}

// WithRequestTimeout bounds each round trip the library makes for a call (its
// `request_timeout_ms`) and each Request whose context has no deadline.
func WithRequestTimeout(d time.Duration) ConnectOption {
	return func(o *connectOptions) { o.requestTimeout = d }
}

// WithReconnect sets whether a dropped connection is re-made, subscriptions and
// consumers included (the library's default is true).
func WithReconnect(on bool) ConnectOption {
	return func(o *connectOptions) { o.reconnect = &on }
}

// Broker is a handle on an embedded broker or on a connection to a ringbrokerd.
// It is safe for concurrent use by any number of goroutines. Close it when done.
type Broker struct {
	h              *C.ringbroker_t
	embedded       bool
	requestTimeout time.Duration

	// mu is held shared by every C call on h and exclusively by Close, which the C
	// ABI requires to come last.
	mu sync.RWMutex
	// closed is set when Close starts: new calls return ErrClosed (h stays open
	// until Close has drained the completions of the calls already made).
	closed bool // guarded by mu

	closeOnce sync.Once
	closeErr  error
	// drainTimeout bounds Close's wait for outstanding publishes (CloseDrainTimeout).
	drainTimeout time.Duration

	consumersMu sync.Mutex
	consumers   map[*Consumer]struct{} // open consumers, closed by Close
	stopping    bool                   // guarded by consumersMu

	completions *dispatcher
}

// Open starts an embedded broker in this process.
func Open(cfg Config) (*Broker, error) {
	if cfg.DataDir == "" {
		return nil, newError(StatusInvalidArgument, "Config.DataDir is required")
	}
	pairs := [][2]string{{"data_dir", cfg.DataDir}}
	if cfg.Shards != 0 {
		pairs = append(pairs, [2]string{"shards", strconv.Itoa(cfg.Shards)})
	}
	if cfg.DisablePinning {
		pairs = append(pairs, [2]string{"pin_to_cores", "false"})
	}
	if cfg.IdleSpin != 0 {
		if cfg.IdleSpin < 0 {
			return nil, newError(StatusInvalidArgument, "Config.IdleSpin must not be negative")
		}
		pairs = append(pairs, [2]string{"idle_spin_us", strconv.FormatInt(cfg.IdleSpin.Microseconds(), 10)})
	}
	var h *C.ringbroker_t
	err := withConfig(pairs, func(c *C.ringbroker_config) error {
		return call(func() C.ringbroker_status { return C.ringbroker_open(c, &h) })
	})
	if err != nil {
		return nil, err
	}
	return newBroker(h, cfg.RequestTimeout)
}

// Connect connects to the ringbrokerd at url ("ringbroker://host[:port]", port
// 7070 by default). The context's deadline bounds the connection attempt; if ctx
// ends first, Connect returns ctx.Err() and a connection made afterwards is closed.
func Connect(ctx context.Context, url string, opts ...ConnectOption) (*Broker, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var o connectOptions
	for _, opt := range opts {
		opt(&o)
	}
	pairs := connectPairs(ctx, o)
	curl, err := cstring("url", url)
	if err != nil {
		return nil, err
	}
	type result struct {
		h   *C.ringbroker_t
		err error
	}
	done := make(chan result, 1)
	connect := func() {
		var h *C.ringbroker_t
		err := withConfig(pairs, func(c *C.ringbroker_config) error {
			return call(func() C.ringbroker_status { return C.ringbroker_connect(curl, c, &h) })
		})
		done <- result{h, err}
	}
	if ctx.Done() == nil {
		connect()
	} else {
		go connect()
	}
	select {
	case r := <-done:
		if r.err != nil {
			return nil, r.err
		}
		return newBroker(r.h, o.requestTimeout)
	case <-ctx.Done():
		go func() { // the attempt ends within its connect timeout; close what it made
			if r := <-done; r.err == nil {
				C.ringbroker_close(r.h)
			}
		}()
		return nil, ctx.Err()
	}
}

func connectPairs(ctx context.Context, o connectOptions) [][2]string {
	var pairs [][2]string
	if o.authToken != "" {
		pairs = append(pairs, [2]string{"auth_token", o.authToken})
	}
	if o.clientName != "" {
		pairs = append(pairs, [2]string{"client_name", o.clientName})
	}
	if o.requestTimeout > 0 {
		pairs = append(pairs, [2]string{"request_timeout_ms", strconv.FormatInt(millisCeil(o.requestTimeout), 10)})
	}
	if o.reconnect != nil {
		pairs = append(pairs, [2]string{"reconnect", strconv.FormatBool(*o.reconnect)})
	}
	if dl, ok := ctx.Deadline(); ok {
		pairs = append(pairs, [2]string{"connect_timeout_ms", strconv.FormatInt(millisCeil(time.Until(dl)), 10)})
	}
	return pairs
}

// millisCeil is d in whole milliseconds, rounded up, at least 1: a library timeout
// derived from a context's deadline never fires before it.
func millisCeil(d time.Duration) int64 {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	if ms < 1 {
		return 1
	}
	return int64(ms)
}

func newBroker(h *C.ringbroker_t, requestTimeout time.Duration) (*Broker, error) {
	if requestTimeout <= 0 {
		requestTimeout = DefaultRequestTimeout
	}
	b := &Broker{
		h:              h,
		embedded:       C.ringbroker_is_embedded(h) == 1,
		requestTimeout: requestTimeout,
		consumers:      make(map[*Consumer]struct{}),
		drainTimeout:   CloseDrainTimeout,
	}
	d, err := newDispatcher(b)
	if err != nil {
		C.ringbroker_close(h)
		return nil, err
	}
	b.completions = d
	return b, nil
}

// makeConfig builds a ringbroker_config from key/value pairs; the caller frees it.
func makeConfig(pairs [][2]string) (*C.ringbroker_config, error) {
	var c *C.ringbroker_config
	if err := call(func() C.ringbroker_status { return C.ringbroker_config_new(&c) }); err != nil {
		return nil, err
	}
	for _, kv := range pairs {
		k, err := cstring("config key", kv[0])
		if err == nil {
			var v *C.char
			if v, err = cstring("config value of "+kv[0], kv[1]); err == nil {
				err = call(func() C.ringbroker_status { return C.ringbroker_config_set(c, k, v) })
			}
		}
		if err != nil {
			C.ringbroker_config_free(c)
			return nil, err
		}
	}
	return c, nil
}

// withConfig runs f with a config built from pairs and frees it; f must not keep it
// past its return (see blockingWith for calls that may outlive their caller).
func withConfig(pairs [][2]string, f func(*C.ringbroker_config) error) error {
	c, err := makeConfig(pairs)
	if err != nil {
		return err
	}
	defer C.ringbroker_config_free(c)
	return f(c)
}

// IsEmbedded reports whether the broker runs in this process (Open) rather than in
// a daemon (Connect).
func (b *Broker) IsEmbedded() bool { return b.embedded }

// acquire takes mu shared for a C call on the handle; ErrClosed once closed.
func (b *Broker) acquire() error {
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (b *Broker) release() { b.mu.RUnlock() }

// do runs one C call on the open handle.
func (b *Broker) do(f func() C.ringbroker_status) error {
	if err := b.acquire(); err != nil {
		return err
	}
	defer b.release()
	return call(f)
}

// blocking runs a C call that may wait (a round trip to the daemon, a sync to
// disk). The C ABI has no way to cancel such a call, so when ctx can end, the call
// runs on its own goroutine and blocking returns ctx.Err() as soon as ctx is done;
// the operation may still take effect, and the call ends within the library's
// request timeout. Out-parameters written by f must only be read when blocking
// returns nil. cleanup (if not nil) runs once f has returned, or at once if f never
// runs: it frees what f uses.
func (b *Broker) blocking(ctx context.Context, f func() C.ringbroker_status, cleanup func()) error {
	if cleanup == nil {
		cleanup = func() {}
	}
	if err := ctx.Err(); err != nil {
		cleanup()
		return err
	}
	if err := b.acquire(); err != nil {
		cleanup()
		return err
	}
	if ctx.Done() == nil {
		defer cleanup()
		defer b.release()
		return call(f)
	}
	done := make(chan error, 1)
	go func() {
		defer cleanup()
		defer b.release()
		done <- call(f)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// blockingWith is blocking for a call that takes a config built from pairs; the
// config is freed once the call has returned.
func (b *Broker) blockingWith(ctx context.Context, pairs [][2]string, f func(*C.ringbroker_config) C.ringbroker_status) error {
	c, err := makeConfig(pairs)
	if err != nil {
		return err
	}
	return b.blocking(ctx, func() C.ringbroker_status { return f(c) }, func() { C.ringbroker_config_free(c) })
}

// track registers a new consumer so Close can close it; a consumer made while the
// broker closes is closed at once.
func (b *Broker) track(c *Consumer) error {
	b.consumersMu.Lock()
	stopping := b.stopping
	if !stopping {
		b.consumers[c] = struct{}{}
	}
	b.consumersMu.Unlock()
	if stopping {
		c.Close()
		return ErrClosed
	}
	return nil
}

func (b *Broker) untrack(c *Consumer) {
	b.consumersMu.Lock()
	delete(b.consumers, c)
	b.consumersMu.Unlock()
}

// Close closes the broker. It first refuses new calls (they return ErrClosed) and
// waits for C calls in progress to return; then it closes every consumer made from
// the broker (waiting receivers return ErrClosed) and waits, up to
// CloseDrainTimeout, until every asynchronous publish already made (PublishRecords,
// PublishExchange) has its outcome, so a record stored while Close ran is reported
// stored; a Request answered meanwhile gets its reply, but Close does not wait for
// requests. Then it closes the handle: an embedded broker syncs and stops its
// shards, a connection closes. Calls still waiting then (requests, and publishes
// unanswered within the bound) return an error wrapping ErrClosed: their outcome is
// unknown. Calling Close again returns the first call's result.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock() // waits for C calls in progress
		b.closed = true
		b.mu.Unlock()
		b.consumersMu.Lock()
		b.stopping = true
		open := make([]*Consumer, 0, len(b.consumers))
		for c := range b.consumers {
			open = append(open, c)
		}
		b.consumersMu.Unlock()
		for _, c := range open {
			c.Close()
		}
		b.completions.settle(b.drainTimeout)
		b.completions.stop()
		b.completions.drain() // what was answered since the goroutine last polled
		b.mu.Lock()
		b.closeErr = call(func() C.ringbroker_status { return C.ringbroker_close(b.h) })
		b.h = nil
		b.mu.Unlock()
		b.completions.failAll()
	})
	return b.closeErr
}

// configPairs is a builder of config key/value pairs that skips zero values.
type configPairs [][2]string

func (p *configPairs) str(key, v string) {
	if v != "" {
		*p = append(*p, [2]string{key, v})
	}
}

func (p *configPairs) uint(key string, v uint64) {
	if v != 0 {
		*p = append(*p, [2]string{key, strconv.FormatUint(v, 10)})
	}
}

func (p *configPairs) millis(key string, d time.Duration) {
	if d != 0 {
		*p = append(*p, [2]string{key, strconv.FormatInt(d.Milliseconds(), 10)})
	}
}

func (p *configPairs) list(key string, v []string) {
	if len(v) != 0 {
		*p = append(*p, [2]string{key, strings.Join(v, ",")})
	}
}

func (p *configPairs) flag(key string, v bool) {
	if v {
		*p = append(*p, [2]string{key, "true"})
	}
}

// goBytes copies n bytes at p (C memory) into a new Go slice; nil when n is 0.
func goBytes(p unsafe.Pointer, n C.uintptr_t) []byte {
	if n == 0 || p == nil {
		return nil
	}
	return C.GoBytes(p, C.int(n))
}
