package ringbroker

// #include "ringbroker.h"
import "C"

import (
	"context"
	"strconv"
	"time"
	"unsafe"
)

// ExchangeKind is how an exchange routes.
type ExchangeKind string

// The kinds of exchange.
const (
	// ExchangeDirect routes to queues bound with the message's routing key.
	ExchangeDirect ExchangeKind = "direct"
	// ExchangeFanout routes to every bound queue.
	ExchangeFanout ExchangeKind = "fanout"
	// ExchangeTopic routes by pattern ("*" one word, "#" any words).
	ExchangeTopic ExchangeKind = "topic"
	// ExchangeHeaders routes by the message's headers (see the binding arguments).
	ExchangeHeaders ExchangeKind = "headers"
)

// ExchangeConfig defines an exchange (DeclareExchange).
type ExchangeConfig struct {
	// Name names the exchange (required).
	Name string
	// Kind is how it routes (required).
	Kind ExchangeKind
	// Durable exchanges survive a restart.
	Durable bool
}

// QueueConfig defines a queue (DeclareQueue). Zero fields keep the library's
// defaults.
type QueueConfig struct {
	// Name names the queue (required).
	Name string
	// Durable queues survive a restart (with their persistent messages).
	Durable bool
	// Exclusive queues belong to this connection.
	Exclusive bool
	// AutoDelete queues are deleted when their last consumer leaves.
	AutoDelete bool
	// MessageTTL drops (or dead-letters) messages older than this.
	MessageTTL time.Duration
	// Expires deletes the queue after this long unused.
	Expires time.Duration
	// MaxLength bounds the ready messages.
	MaxLength uint64
	// MaxLengthBytes bounds the ready messages' bytes.
	MaxLengthBytes uint64
	// Overflow is what a full queue does: "drop-head" or "reject-publish".
	Overflow string
	// DeadLetterExchange receives rejected and expired messages.
	DeadLetterExchange string
	// DeadLetterRoutingKey replaces their routing key.
	DeadLetterRoutingKey string
	// MaxPriority enables priorities 0 to MaxPriority.
	MaxPriority uint8
}

func (q QueueConfig) pairs() [][2]string {
	var p configPairs
	p.str("name", q.Name)
	p.flag("durable", q.Durable)
	p.flag("exclusive", q.Exclusive)
	p.flag("auto_delete", q.AutoDelete)
	p.millis("message_ttl_ms", q.MessageTTL)
	p.millis("expires_ms", q.Expires)
	p.uint("max_length", q.MaxLength)
	p.uint("max_length_bytes", q.MaxLengthBytes)
	p.str("overflow", q.Overflow)
	p.str("dead_letter_exchange", q.DeadLetterExchange)
	p.str("dead_letter_routing_key", q.DeadLetterRoutingKey)
	p.uint("max_priority", uint64(q.MaxPriority))
	return p
}

// QueueInfo is a queue's figures.
type QueueInfo struct {
	// Messages is how many are ready for delivery.
	Messages uint64
	// Unacked is how many were delivered and not acknowledged.
	Unacked uint64
	// Consumers is how many consumers it has now.
	Consumers uint64
}

func queueInfoOf(i *C.ringbroker_queue_info_t) QueueInfo {
	return QueueInfo{Messages: uint64(i.messages), Unacked: uint64(i.unacked), Consumers: uint64(i.consumers)}
}

// DeclareExchange declares an exchange; idempotent for the same definition,
// ErrAlreadyExists for a different one.
func (b *Broker) DeclareExchange(ctx context.Context, cfg ExchangeConfig) error {
	var p configPairs
	p.str("name", cfg.Name)
	p.str("kind", string(cfg.Kind))
	p.flag("durable", cfg.Durable)
	return b.blockingWith(ctx, p, func(c *C.ringbroker_config) C.ringbroker_status {
		return C.ringbroker_exchange_declare(b.h, c)
	})
}

// DeleteExchange deletes an exchange; with ifUnused, only if nothing is bound to it
// (ErrRefused otherwise). ErrNotFound.
func (b *Broker) DeleteExchange(ctx context.Context, name string, ifUnused bool) error {
	n, err := cstring("exchange", name)
	if err != nil {
		return err
	}
	return b.blocking(ctx, func() C.ringbroker_status {
		return C.ringbroker_exchange_delete(b.h, n, cbool(ifUnused))
	}, nil)
}

// DeclareQueue declares a queue (idempotent for the same definition) and returns
// its figures.
func (b *Broker) DeclareQueue(ctx context.Context, cfg QueueConfig) (QueueInfo, error) {
	info := new(C.ringbroker_queue_info_t)
	err := b.blockingWith(ctx, cfg.pairs(), func(c *C.ringbroker_config) C.ringbroker_status {
		return C.ringbroker_queue_declare(b.h, c, info)
	})
	if err != nil {
		return QueueInfo{}, err
	}
	return queueInfoOf(info), nil
}

// DeleteQueue deletes a queue (only if it has no consumer, with ifUnused; only if
// empty, with ifEmpty: ErrRefused otherwise) and returns how many messages it held.
func (b *Broker) DeleteQueue(ctx context.Context, name string, ifUnused, ifEmpty bool) (uint64, error) {
	n, err := cstring("queue", name)
	if err != nil {
		return 0, err
	}
	ready := new(C.uint64_t)
	err = b.blocking(ctx, func() C.ringbroker_status {
		return C.ringbroker_queue_delete(b.h, n, cbool(ifUnused), cbool(ifEmpty), ready)
	}, nil)
	if err != nil {
		return 0, err
	}
	return uint64(*ready), nil
}

// PurgeQueue removes a queue's ready messages and returns how many.
func (b *Broker) PurgeQueue(ctx context.Context, name string) (uint64, error) {
	n, err := cstring("queue", name)
	if err != nil {
		return 0, err
	}
	purged := new(C.uint64_t)
	err = b.blocking(ctx, func() C.ringbroker_status { return C.ringbroker_queue_purge(b.h, n, purged) }, nil)
	if err != nil {
		return 0, err
	}
	return uint64(*purged), nil
}

// QueueInfo returns a queue's figures. ErrNotFound.
func (b *Broker) QueueInfo(ctx context.Context, name string) (QueueInfo, error) {
	n, err := cstring("queue", name)
	if err != nil {
		return QueueInfo{}, err
	}
	info := new(C.ringbroker_queue_info_t)
	err = b.blocking(ctx, func() C.ringbroker_status { return C.ringbroker_queue_info(b.h, n, info) }, nil)
	if err != nil {
		return QueueInfo{}, err
	}
	return queueInfoOf(info), nil
}

// binding is the shared shape of the bind and unbind calls.
type bindFunc func(h *C.ringbroker_t, dst, src, key *C.char, args *C.ringbroker_header, n C.uintptr_t) C.ringbroker_status

func (b *Broker) bind(ctx context.Context, f bindFunc, dst, src, key string, args []Header) error {
	var size arenaSize
	size.str(dst)
	size.str(src)
	size.str(key)
	size.headers(args)
	a := newArena(size)
	d, err := a.str("destination", dst)
	var s, k *C.char
	var h *C.ringbroker_header
	if err == nil {
		s, err = a.str("source", src)
	}
	if err == nil {
		k, err = a.str("routing key", key)
	}
	if err == nil {
		h, err = a.headers(args)
	}
	if err != nil {
		a.free()
		return err
	}
	return b.blocking(ctx, func() C.ringbroker_status {
		return f(b.h, d, s, k, h, C.uintptr_t(len(args)))
	}, a.free)
}

// BindQueue binds queue to exchange with routingKey; args are what a headers
// exchange matches ("x-match" = "all" or "any", then the headers). ErrNotFound if
// either is missing.
func (b *Broker) BindQueue(ctx context.Context, queue, exchange, routingKey string, args []Header) error {
	return b.bind(ctx, func(h *C.ringbroker_t, d, s, k *C.char, a *C.ringbroker_header, n C.uintptr_t) C.ringbroker_status {
		return C.ringbroker_queue_bind(h, d, s, k, a, n)
	}, queue, exchange, routingKey, args)
}

// UnbindQueue removes the binding BindQueue made with the same arguments.
func (b *Broker) UnbindQueue(ctx context.Context, queue, exchange, routingKey string, args []Header) error {
	return b.bind(ctx, func(h *C.ringbroker_t, d, s, k *C.char, a *C.ringbroker_header, n C.uintptr_t) C.ringbroker_status {
		return C.ringbroker_queue_unbind(h, d, s, k, a, n)
	}, queue, exchange, routingKey, args)
}

// BindExchange binds exchange destination to exchange source: what source routes
// with routingKey also goes through destination.
func (b *Broker) BindExchange(ctx context.Context, destination, source, routingKey string, args []Header) error {
	return b.bind(ctx, func(h *C.ringbroker_t, d, s, k *C.char, a *C.ringbroker_header, n C.uintptr_t) C.ringbroker_status {
		return C.ringbroker_exchange_bind(h, d, s, k, a, n)
	}, destination, source, routingKey, args)
}

// Publishing is a message to publish to an exchange.
type Publishing struct {
	// Exchange is where it goes; "" is the default exchange, which routes to the
	// queue named by the routing key.
	Exchange string
	// RoutingKey is what the exchange routes by.
	RoutingKey string
	// Headers are what a headers exchange matches.
	Headers []Header
	// Data is the payload.
	Data []byte
	// Priority is 0 to 255, for queues with MaxPriority.
	Priority uint8
	// Persistent messages are stored on disk in durable queues (confirmed once synced).
	Persistent bool
	// Expiration is a per-message TTL (0: none).
	Expiration time.Duration
}

// Confirm is how one message of an exchange publish went.
type Confirm struct {
	// Err is nil once every queue it reached has it (persistent copies synced);
	// ErrUnroutable for a mandatory message no queue took.
	Err error
	// Queues is how many queues it reached (0: unroutable, not mandatory).
	Queues uint32
}

func publishingsArena(msgs []Publishing) (*arena, []C.ringbroker_queue_msg, error) {
	var size arenaSize
	size.add(uintptr(len(msgs)) * C.sizeof_ringbroker_queue_msg)
	for i := range msgs {
		size.str(msgs[i].Exchange)
		size.str(msgs[i].RoutingKey)
		size.headers(msgs[i].Headers)
		size.bytes(msgs[i].Data)
	}
	a := newArena(size)
	arr := unsafe.Slice((*C.ringbroker_queue_msg)(a.alloc(uintptr(len(msgs))*C.sizeof_ringbroker_queue_msg)), len(msgs))
	for i := range msgs {
		m := &msgs[i]
		var err error
		if arr[i].exchange, err = a.str("exchange", m.Exchange); err == nil {
			if arr[i].routing_key, err = a.str("routing key", m.RoutingKey); err == nil {
				arr[i].headers, err = a.headers(m.Headers)
			}
		}
		if err != nil {
			a.free()
			return nil, nil, err
		}
		if m.Expiration < 0 {
			a.free()
			return nil, nil, newError(StatusInvalidArgument, "negative Expiration")
		}
		arr[i].headers_len = C.uintptr_t(len(m.Headers))
		arr[i].payload = a.bytes(m.Data)
		arr[i].payload_len = C.uintptr_t(len(m.Data))
		arr[i].priority = C.uint8_t(m.Priority)
		arr[i].persistent = C.bool(m.Persistent)
		arr[i].expiration_ms = C.uint64_t(m.Expiration.Milliseconds())
	}
	return a, arr, nil
}

// PublishExchange publishes msgs in one call and waits for each confirm, or until
// ctx ends (ctx.Err(); the messages may still be delivered). With mandatory, a
// message no queue takes is ErrUnroutable. The confirms are in the messages' order;
// the error is the first message's failure, if any.
func (b *Broker) PublishExchange(ctx context.Context, mandatory bool, msgs ...Publishing) ([]Confirm, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a, arr, err := publishingsArena(msgs)
	if err != nil {
		return nil, err
	}
	token, ch, err := b.completions.register(len(msgs), true)
	if err != nil {
		a.free()
		return nil, err
	}
	err = b.do(func() C.ringbroker_status {
		return C.ringbroker_exchange_publish_async(b.h, &arr[0], C.uintptr_t(len(arr)), cbool(mandatory), C.uint64_t(token))
	})
	a.free()
	if err != nil {
		b.completions.forget(token, ch)
		return nil, err
	}
	got, err := b.completions.await(ctx, token, ch, len(msgs))
	if err != nil {
		return nil, err
	}
	confirms := make([]Confirm, len(got))
	var first error
	for i, c := range got {
		confirms[i] = Confirm{Err: c.err, Queues: c.queues}
		if first == nil && c.err != nil {
			first = c.err
		}
	}
	return confirms, first
}

// PublishExchangeNoWait publishes msgs without waiting for confirms (fire and
// forget).
func (b *Broker) PublishExchangeNoWait(mandatory bool, msgs ...Publishing) error {
	if len(msgs) == 0 {
		return nil
	}
	a, arr, err := publishingsArena(msgs)
	if err != nil {
		return err
	}
	defer a.free()
	return b.do(func() C.ringbroker_status {
		return C.ringbroker_exchange_publish_nowait(b.h, &arr[0], C.uintptr_t(len(arr)), cbool(mandatory))
	})
}

// QueueConsumeConfig configures ConsumeQueue.
type QueueConsumeConfig struct {
	// Prefetch bounds the unacknowledged deliveries (0: the library's default, 100).
	Prefetch int
	// NoAck delivers without acknowledgements.
	NoAck bool
}

// ConsumeQueue starts consuming queue. Acknowledge with Msg.Ack or
// Consumer.QueueAck; reject with Msg.Nack, Msg.Reject or Consumer.QueueNack.
// ErrNotFound, ErrLocked (an exclusive queue of another connection).
func (b *Broker) ConsumeQueue(ctx context.Context, queue string, cfg QueueConsumeConfig) (*Consumer, error) {
	q, err := cstring("queue", queue)
	if err != nil {
		return nil, err
	}
	var p configPairs
	if cfg.Prefetch > 0 {
		p.str("prefetch", strconv.Itoa(cfg.Prefetch))
	}
	p.flag("no_ack", cfg.NoAck)
	c, err := makeConfig(p)
	if err != nil {
		return nil, err
	}
	return b.newConsumerCtx(ctx, KindQueue, func(out **C.ringbroker_consumer_t) C.ringbroker_status {
		return C.ringbroker_queue_consume(b.h, q, c, out)
	}, func() { C.ringbroker_config_free(c) })
}
