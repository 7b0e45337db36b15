package ringbroker

/*
#include <stdlib.h>
#include <string.h>
#include "ringbroker.h"

// The most messages one fetch takes (one cgo crossing).
#define RBGO_FETCH_MAX 128

// A consumer's scratch space in C memory: the fetch writes here, so no Go pointer is
// handed to C and nothing escapes to the Go heap per fetch.
typedef struct rbgo_batch {
	size_t n;
	ringbroker_msg_t *msgs[RBGO_FETCH_MAX];
	ringbroker_msg_view_t views[RBGO_FETCH_MAX];
} rbgo_batch;

// Takes what is buffered (never waits) and fills each message's view: one crossing
// per batch instead of one per message. After it returns fewer than RBGO_FETCH_MAX,
// the consumer's eventfd turns readable when more come.
static ringbroker_status rbgo_fetch(const ringbroker_consumer_t *c, rbgo_batch *b) {
	b->n = 0;
	ringbroker_status s = ringbroker_try_fetch(c, b->msgs, RBGO_FETCH_MAX, &b->n);
	for (size_t i = 0; i < b->n; i++) {
		if (ringbroker_msg_view(b->msgs[i], &b->views[i]) != RINGBROKER_OK) {
			memset(&b->views[i], 0, sizeof b->views[i]);
		}
	}
	return s;
}

// Frees the messages of a fetched batch that the Go side detached (subject messages
// without headers: everything copied, see newMsg), in one crossing.
static void rbgo_free_detached(rbgo_batch *b) {
	for (size_t i = 0; i < b->n; i++) {
		if (b->views[i].kind == RINGBROKER_MSG_SUBJECT && b->views[i].header_count == 0) {
			ringbroker_msg_free(b->msgs[i]);
		}
	}
}
*/
import "C"

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"
)

// fetchMax is how many messages one fetch takes from the library (RBGO_FETCH_MAX).
const fetchMax = C.RBGO_FETCH_MAX

// Consumer receives messages: a subject subscription (Subscribe), a stream consumer
// (Consume, ConsumeEphemeral) or a queue consumer (ConsumeQueue). Receive with Next,
// Fetch or the Messages channel; acknowledge with the Msg methods or the batch calls
// here, from any goroutine. Close it when done (Broker.Close closes it too).
//
// Messages are taken from the library in batches of up to 128 per cgo call and
// handed out one by one; while nothing is buffered, a receiving goroutine parks on
// the consumer's eventfd through the Go runtime poller.
type Consumer struct {
	b    *Broker
	kind Kind

	// mu is held shared by every C call on c and exclusively by Close.
	mu sync.RWMutex
	c  *C.ringbroker_consumer_t // nil once closed

	fd    *eventFD
	batch *C.rbgo_batch // C memory; used by the holder of recv

	// recv is the receive token (capacity 1): Next, Fetch and the pump hold it while
	// they receive, as the library allows one receiving thread at a time.
	recv chan struct{}
	buf  []*Msg // fetched, not handed out yet (holder of recv)
	head int    // next in buf to hand out

	closing   chan struct{}
	closeOnce sync.Once

	pumpOnce    sync.Once
	pumpStarted chan struct{}
	out         chan *Msg

	errMu sync.Mutex
	err   error // why the Messages channel closed
}

// testHookConsumerFD, when set (tests only), runs just before a new consumer's
// eventfd is asked for.
var testHookConsumerFD atomic.Pointer[func(b *Broker)]

// newConsumer makes a consumer with open, which fills its out-parameter. The
// consumer's eventfd is asked for in the same C call as open, under the broker's
// shared lock, so Close cannot close the handle in between.
func (b *Broker) newConsumer(kind Kind, open func(**C.ringbroker_consumer_t) C.ringbroker_status) (*Consumer, error) {
	var cc *C.ringbroker_consumer_t
	var fd C.int
	err := b.do(func() C.ringbroker_status {
		if s := open(&cc); s != C.RINGBROKER_OK {
			return s
		}
		if hook := testHookConsumerFD.Load(); hook != nil {
			(*hook)(b)
		}
		s := C.ringbroker_consumer_fd(cc, &fd)
		if s != C.RINGBROKER_OK {
			// The failure's message is read by call on this thread; freeing a consumer
			// sets no error message.
			C.ringbroker_consumer_free(cc)
			cc = nil
		}
		return s
	})
	if err != nil {
		return nil, err
	}
	return b.wrapConsumer(kind, cc, fd)
}

// newConsumerCtx is newConsumer for a call that may wait (a round trip to the
// daemon): it honours ctx as Broker.blocking does, and closes a consumer made after
// ctx ended. cleanup (if not nil) runs once open has returned or will not run.
func (b *Broker) newConsumerCtx(ctx context.Context, kind Kind, open func(**C.ringbroker_consumer_t) C.ringbroker_status, cleanup func()) (*Consumer, error) {
	if cleanup == nil {
		cleanup = func() {}
	}
	if err := ctx.Err(); err != nil {
		cleanup()
		return nil, err
	}
	if ctx.Done() == nil {
		defer cleanup()
		return b.newConsumer(kind, open)
	}
	type result struct {
		c   *Consumer
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer cleanup()
		c, err := b.newConsumer(kind, open)
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		return r.c, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.err == nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// wrapConsumer wraps cc, whose eventfd is fd.
func (b *Broker) wrapConsumer(kind Kind, cc *C.ringbroker_consumer_t, fd C.int) (*Consumer, error) {
	w, err := watchFD(int(fd), "ringbroker-consumer")
	if err != nil {
		b.freeConsumer(cc)
		return nil, err
	}
	c := &Consumer{
		b:           b,
		kind:        kind,
		c:           cc,
		fd:          w,
		batch:       (*C.rbgo_batch)(C.calloc(1, C.sizeof_rbgo_batch)),
		recv:        make(chan struct{}, 1),
		closing:     make(chan struct{}),
		pumpStarted: make(chan struct{}),
	}
	if err := b.track(c); err != nil {
		return nil, err
	}
	return c, nil
}

// freeConsumer frees a consumer while the handle is known to be open or closed, not
// closing.
func (b *Broker) freeConsumer(cc *C.ringbroker_consumer_t) {
	b.mu.RLock()
	C.ringbroker_consumer_free(cc)
	b.mu.RUnlock()
}

// Kind says which model the consumer receives from.
func (c *Consumer) Kind() Kind { return c.kind }

// do runs one C call on the open consumer; ErrClosed once it or its broker closed.
func (c *Consumer) do(f func(*C.ringbroker_consumer_t) C.ringbroker_status) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.c == nil {
		return ErrClosed
	}
	cc := c.c
	return c.b.do(func() C.ringbroker_status { return f(cc) })
}

// fetch takes what the library has buffered into c.buf (one cgo call). The caller
// holds recv.
func (c *Consumer) fetch() error {
	if c.head == len(c.buf) {
		c.buf, c.head = c.buf[:0], 0
	}
	c.batch.n = 0
	err := c.do(func(cc *C.ringbroker_consumer_t) C.ringbroker_status { return C.rbgo_fetch(cc, c.batch) })
	n := int(c.batch.n)
	msgs := unsafe.Slice(&c.batch.msgs[0], fetchMax)
	views := unsafe.Slice(&c.batch.views[0], fetchMax)
	// The detached messages of the batch (subject messages without headers: the
	// common case) are made in one slab of Msgs over one slab of bytes, two
	// allocations a batch instead of two a message.
	detached, size := 0, 0
	for i := 0; i < n; i++ {
		if v := &views[i]; isDetached(v) {
			detached++
			size += int(v.subject_len + v.reply_len + v.payload_len)
		}
	}
	var slab detachedSlab
	if detached > 0 {
		slab = detachedSlab{msgs: make([]Msg, detached), bytes: make([]byte, size)}
	}
	for i := 0; i < n; i++ {
		if v := &views[i]; isDetached(v) {
			c.buf = append(c.buf, slab.next(v, c))
		} else {
			c.buf = append(c.buf, newMsg(msgs[i], v, c, c.b))
		}
	}
	if detached > 0 {
		C.rbgo_free_detached(c.batch)
	}
	return err
}

// buffered is how many fetched messages wait to be handed out.
func (c *Consumer) buffered() int { return len(c.buf) - c.head }

func (c *Consumer) take() *Msg {
	m := c.buf[c.head]
	c.buf[c.head] = nil
	c.head++
	return m
}

// fill makes sure a message is buffered, waiting on the eventfd until one comes or
// ctx ends. The caller holds recv. Messages fetched before a failure are handed out
// first; the failure comes with the next fetch.
func (c *Consumer) fill(ctx context.Context) error {
	if c.buffered() > 0 {
		return nil
	}
	var fetchErr error
	waitErr := c.fd.wait(ctx, func() bool {
		fetchErr = c.fetch()
		return c.buffered() > 0 || fetchErr != nil
	})
	switch {
	case c.buffered() > 0:
		return nil
	case fetchErr != nil:
		return fetchErr
	}
	return waitErr
}

// acquireRecv takes the receive token; it reports pump = true, without the token,
// if the Messages channel is in use (receive from it instead).
func (c *Consumer) acquireRecv(ctx context.Context) (pump bool, err error) {
	select {
	case <-c.pumpStarted:
		return true, nil
	default:
	}
	select {
	case c.recv <- struct{}{}:
		return false, nil
	case <-c.pumpStarted:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	case <-c.closing:
		return false, ErrClosed
	}
}

func (c *Consumer) releaseRecv() { <-c.recv }

// Next waits for the next message until ctx ends (ctx.Err()) or the consumer is
// closed (ErrClosed) or ends (ErrNotFound, ErrShuttingDown, ErrDisconnected, with
// the library's message). Once Messages was called, Next receives from that channel.
// One goroutine at a time receives; others wait their turn.
func (c *Consumer) Next(ctx context.Context) (*Msg, error) {
	pump, err := c.acquireRecv(ctx)
	if err != nil {
		return nil, err
	}
	if pump {
		return c.fromPump(ctx)
	}
	defer c.releaseRecv()
	if err := c.fill(ctx); err != nil {
		return nil, err
	}
	return c.take(), nil
}

// Fetch waits for at least one message as Next does, then returns up to max of
// those available without waiting more (max <= 0 means one fetch's worth, 128).
func (c *Consumer) Fetch(ctx context.Context, max int) ([]*Msg, error) {
	if max <= 0 {
		max = fetchMax
	}
	pump, err := c.acquireRecv(ctx)
	if err != nil {
		return nil, err
	}
	if pump {
		return c.fetchFromPump(ctx, max)
	}
	defer c.releaseRecv()
	if err := c.fill(ctx); err != nil {
		return nil, err
	}
	if c.buffered() < max {
		// Top up without waiting; a failure here comes with the next call.
		_ = c.fetch()
	}
	n := min(max, c.buffered())
	out := make([]*Msg, n)
	for i := range out {
		out[i] = c.take()
	}
	return out, nil
}

func (c *Consumer) fromPump(ctx context.Context) (*Msg, error) {
	select {
	case m, ok := <-c.out:
		if !ok {
			return nil, c.Err()
		}
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Consumer) fetchFromPump(ctx context.Context, max int) ([]*Msg, error) {
	m, err := c.fromPump(ctx)
	if err != nil {
		return nil, err
	}
	out := []*Msg{m}
	for len(out) < max {
		select {
		case m, ok := <-c.out:
			if !ok {
				return out, nil
			}
			out = append(out, m)
		default:
			return out, nil
		}
	}
	return out, nil
}

// Messages returns a channel that delivers every message the consumer receives,
// fed by one goroutine that fetches in batches. The channel closes when the
// consumer is closed or ends; Err then says why. Calling Messages again returns the
// same channel. Messages received and not yet read from the channel when the
// consumer closes are released.
func (c *Consumer) Messages() <-chan *Msg {
	c.pumpOnce.Do(func() {
		c.out = make(chan *Msg)
		go c.pump()
		close(c.pumpStarted)
	})
	return c.out
}

func (c *Consumer) pump() {
	defer close(c.out)
	select {
	case c.recv <- struct{}{}:
	case <-c.closing:
		c.setErr(ErrClosed)
		return
	}
	defer c.releaseRecv()
	for {
		if err := c.fill(context.Background()); err != nil {
			c.setErr(err)
			return
		}
		m := c.buf[c.head]
		select {
		case c.out <- m:
			c.take()
		case <-c.closing:
			c.setErr(ErrClosed)
			return // Close releases what is buffered
		}
	}
}

func (c *Consumer) setErr(err error) {
	c.errMu.Lock()
	c.err = err
	c.errMu.Unlock()
}

// Err says why the Messages channel closed (ErrClosed after Close, or the error
// that ended the consumer); nil while it is open.
func (c *Consumer) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// AckBatch acknowledges msgs, all received by this consumer, in one call (stream
// records go in one request). ErrReleased if one was released,
// ErrInvalidArgument if one is nil.
func (c *Consumer) AckBatch(msgs []*Msg) error {
	if len(msgs) == 0 {
		return nil
	}
	if slices.Contains(msgs, nil) {
		return newError(StatusInvalidArgument, "a nil message in the batch")
	}
	// Each message stays locked (not released) until the call returns; locking in
	// address order keeps two overlapping batches from deadlocking.
	locked := slices.Clone(msgs)
	slices.SortFunc(locked, func(a, b *Msg) int {
		return cmp.Compare(uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(b)))
	})
	locked = slices.Compact(locked)
	for _, m := range locked {
		m.mu.Lock()
		defer m.mu.Unlock()
	}
	ptrs := make([]*C.ringbroker_msg_t, len(msgs))
	for i, m := range msgs {
		if err := m.withLocked(func(c *C.ringbroker_msg_t) error {
			ptrs[i] = c
			return nil
		}); err != nil {
			return err
		}
	}
	return c.do(func(cc *C.ringbroker_consumer_t) C.ringbroker_status {
		return C.ringbroker_ack_batch(cc, &ptrs[0], C.uintptr_t(len(ptrs)))
	})
}

// QueueAck acknowledges the queue delivery with tag, and every earlier one if
// multiple. ErrWrongKind on other consumers.
func (c *Consumer) QueueAck(tag uint64, multiple bool) error {
	return c.do(func(cc *C.ringbroker_consumer_t) C.ringbroker_status {
		return C.ringbroker_queue_ack(cc, C.uint64_t(tag), cbool(multiple))
	})
}

// QueueNack rejects the queue delivery with tag (and every earlier one if
// multiple): back to the queue if requeue, else dead-lettered or dropped.
func (c *Consumer) QueueNack(tag uint64, multiple, requeue bool) error {
	return c.do(func(cc *C.ringbroker_consumer_t) C.ringbroker_status {
		return C.ringbroker_queue_nack(cc, C.uint64_t(tag), cbool(multiple), cbool(requeue))
	})
}

// Close stops the consumer: a subscription unsubscribes, a stream consumer leaves
// its group (its unacknowledged records go to other members), a queue consumer is
// cancelled (its unacknowledged deliveries go back to the queue). Waiting receivers
// return ErrClosed; messages already handed out stay valid. Close is idempotent and
// always returns nil.
func (c *Consumer) Close() error {
	c.closeOnce.Do(func() {
		close(c.closing)
		c.fd.close()         // wakes a receiver parked on the poller
		c.recv <- struct{}{} // waits for it to leave; never given back
		c.mu.Lock()
		c.b.freeConsumer(c.c)
		c.c = nil
		C.free(unsafe.Pointer(c.batch))
		c.batch = nil
		c.mu.Unlock()
		for c.buffered() > 0 {
			c.take().Release()
		}
		c.b.untrack(c)
	})
	return nil
}
