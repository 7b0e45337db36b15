package ringbroker

/*
#include <stdlib.h>
#include <string.h>
#include "ringbroker.h"

#define RBGO_COMPLETIONS_MAX 256
typedef struct rbgo_completions {
	size_t n;
	ringbroker_completion items[RBGO_COMPLETIONS_MAX];
	ringbroker_msg_view_t views[RBGO_COMPLETIONS_MAX];
} rbgo_completions;

// Takes up to RBGO_COMPLETIONS_MAX completions and the views of their replies in one
// crossing.
static ringbroker_status rbgo_poll(const ringbroker_t *h, rbgo_completions *c) {
	c->n = 0;
	ringbroker_status s = ringbroker_completions_poll(h, c->items, RBGO_COMPLETIONS_MAX, &c->n);
	for (size_t i = 0; i < c->n; i++) {
		if (c->items[i].reply == NULL ||
				ringbroker_msg_view(c->items[i].reply, &c->views[i]) != RINGBROKER_OK) {
			memset(&c->views[i], 0, sizeof c->views[i]);
		}
	}
	return s;
}
*/
import "C"

import (
	"context"
	"fmt"
	"sync"
	"time"
	"unsafe"
)

// completion is one answered item of an asynchronous publish or request, copied out
// of the library's memory.
type completion struct {
	index     uint32
	err       error // nil when the item succeeded
	partition uint32
	offset    uint64
	duplicate bool
	queues    uint32
	reply     *Msg // requests: the reply, the receiver's to release
}

// waiter is one outstanding token: its channel has room for every completion.
type waiter struct {
	ch        chan completion
	remaining int
	publish   bool // a publish (Close waits for it), not a request
}

// errOutcomeUnknown is what a call still waiting when the handle closes returns.
var errOutcomeUnknown = fmt.Errorf("%w before the outcome came (outcome unknown: it may have taken effect)", ErrClosed)

// dispatcher turns the handle's completions eventfd into per-token channels: one
// goroutine parks on the poller, polls completions in batches when the fd turns
// readable and hands each to the goroutine that waits for its token.
type dispatcher struct {
	b       *Broker
	fd      *eventFD
	scratch *C.rbgo_completions // C memory: the poll writes here
	done    chan struct{}       // closed when the goroutine has returned

	mu        sync.Mutex
	next      uint64
	waiters   map[uint64]*waiter
	publishes int           // waiters that are publishes
	closing   bool          // Close started: no more tokens
	idle      chan struct{} // closed when publishes drops to 0 while Close waits
	gone      chan struct{} // closed when the handle has closed (failAll)
}

func newDispatcher(b *Broker) (*dispatcher, error) {
	var fd C.int
	if err := call(func() C.ringbroker_status { return C.ringbroker_completions_fd(b.h, &fd) }); err != nil {
		return nil, err
	}
	w, err := watchFD(int(fd), "ringbroker-completions")
	if err != nil {
		return nil, err
	}
	d := &dispatcher{
		b:       b,
		fd:      w,
		scratch: (*C.rbgo_completions)(C.calloc(1, C.sizeof_rbgo_completions)),
		done:    make(chan struct{}),
		waiters: make(map[uint64]*waiter),
		gone:    make(chan struct{}),
	}
	go d.run()
	return d, nil
}

func (d *dispatcher) run() {
	defer close(d.done)
	// drain never reports success: the loop ends when stop closes the fd.
	_ = d.fd.wait(context.Background(), func() bool { d.drain(); return false })
}

// drain polls until the queue is empty; the eventfd turns readable again when the
// queue next goes from empty to non-empty.
func (d *dispatcher) drain() {
	for {
		n, err := d.poll()
		if err != nil || n < completionsMax {
			return
		}
	}
}

func (d *dispatcher) poll() (int, error) {
	d.b.mu.RLock() // Close polls for the last time before it closes the handle: it is open
	defer d.b.mu.RUnlock()
	err := call(func() C.ringbroker_status { return C.rbgo_poll(d.b.h, d.scratch) })
	if err != nil {
		return 0, err
	}
	n := int(d.scratch.n)
	items := unsafe.Slice(&d.scratch.items[0], n)
	views := unsafe.Slice(&d.scratch.views[0], n)
	for i := range items {
		d.deliver(&items[i], &views[i])
	}
	return n, nil
}

func (d *dispatcher) deliver(it *C.ringbroker_completion, v *C.ringbroker_msg_view_t) {
	c := completion{
		index:     uint32(it.index),
		partition: uint32(it.partition),
		offset:    uint64(it.offset),
		duplicate: bool(it.duplicate),
		queues:    uint32(it.queues),
	}
	if it.status != C.RINGBROKER_OK {
		c.err = newError(Status(it.status), C.GoString(it.message))
	}
	if it.reply != nil {
		c.reply = newMsg(it.reply, v, nil, d.b)
		if c.reply.detached {
			C.ringbroker_msg_free(it.reply)
		}
	}
	token := uint64(it.token)
	d.mu.Lock()
	w := d.waiters[token]
	if w != nil {
		w.ch <- c // never blocks: room for every item
		if w.remaining--; w.remaining == 0 {
			d.remove(token, w)
		}
	}
	d.mu.Unlock()
	if w == nil && c.reply != nil {
		c.reply.Release() // its requester gave up
	}
}

// remove drops the waiter w of token; the caller holds mu.
func (d *dispatcher) remove(token uint64, w *waiter) {
	delete(d.waiters, token)
	if w.publish {
		if d.publishes--; d.publishes == 0 && d.idle != nil {
			close(d.idle)
			d.idle = nil
		}
	}
}

// register reserves a token for `items` completions of a publish (publish) or a
// request.
func (d *dispatcher) register(items int, publish bool) (uint64, chan completion, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return 0, nil, ErrClosed
	}
	d.next++
	ch := make(chan completion, items)
	d.waiters[d.next] = &waiter{ch: ch, remaining: items, publish: publish}
	if publish {
		d.publishes++
	}
	return d.next, ch, nil
}

// forget drops a token whose waiter gave up (or whose publish failed); completions
// that still come are discarded, replies released. Completions already in ch are
// released too.
func (d *dispatcher) forget(token uint64, ch chan completion) {
	d.mu.Lock()
	if w := d.waiters[token]; w != nil {
		d.remove(token, w)
	}
	d.mu.Unlock()
	for {
		select {
		case c := <-ch:
			if c.reply != nil {
				c.reply.Release()
			}
		default:
			return
		}
	}
}

// settle runs when Close has refused new calls: it waits until every publish made
// before has all its completions (or its caller gave up), at most timeout, while the
// goroutine keeps delivering them.
func (d *dispatcher) settle(timeout time.Duration) {
	d.mu.Lock()
	d.closing = true
	if d.publishes == 0 {
		d.mu.Unlock()
		return
	}
	idle := make(chan struct{})
	d.idle = idle
	d.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	}
}

// stop ends the goroutine and waits for it; the handle is still open.
func (d *dispatcher) stop() {
	d.fd.close()
	<-d.done
}

// failAll runs after the handle closed: the scratch space is freed and no token
// will be answered (waiters see gone and return errOutcomeUnknown).
func (d *dispatcher) failAll() {
	d.mu.Lock()
	d.closing = true
	d.waiters = map[uint64]*waiter{}
	d.publishes = 0
	d.idle = nil
	d.mu.Unlock()
	C.free(unsafe.Pointer(d.scratch))
	d.scratch = nil
	close(d.gone)
}

// await waits for every completion of token, in index order, until ctx ends or the
// broker's handle has closed without answering them all (errOutcomeUnknown); on
// either it forgets the token. Completions delivered before the handle closed count.
func (d *dispatcher) await(ctx context.Context, token uint64, ch chan completion, items int) ([]completion, error) {
	out := make([]completion, items)
	put := func(c completion) {
		if int(c.index) < items {
			out[c.index] = c
		}
	}
	for got := 0; got < items; got++ {
		select {
		case c := <-ch:
			put(c)
		case <-ctx.Done():
			d.forget(token, ch)
			releaseReplies(out)
			return nil, ctx.Err()
		case <-d.gone:
			// Nothing is delivered after gone: take what ch holds.
		held:
			for got < items {
				select {
				case c := <-ch:
					put(c)
					got++
				default:
					break held
				}
			}
			if got == items {
				return out, nil
			}
			d.forget(token, ch)
			releaseReplies(out)
			return nil, errOutcomeUnknown
		}
	}
	return out, nil
}

func releaseReplies(cs []completion) {
	for _, c := range cs {
		if c.reply != nil {
			c.reply.Release()
		}
	}
}

// completionsMax is how many completions one poll takes (RBGO_COMPLETIONS_MAX).
const completionsMax = C.RBGO_COMPLETIONS_MAX
