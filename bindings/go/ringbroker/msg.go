package ringbroker

/*
#include "ringbroker.h"

typedef struct rbgo_header {
	const uint8_t *name;
	size_t name_len;
	const uint8_t *value;
	size_t value_len;
} rbgo_header;

// Reads `count` headers of `m` in one crossing.
static ringbroker_status rbgo_headers(const ringbroker_msg_t *m, rbgo_header *out, size_t count) {
	for (size_t i = 0; i < count; i++) {
		ringbroker_status s = ringbroker_msg_header(m, i, &out[i].name, &out[i].name_len,
			&out[i].value, &out[i].value_len);
		if (s != RINGBROKER_OK) return s;
	}
	return RINGBROKER_OK;
}
*/
import "C"

import (
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// Kind says which model a message came from.
type Kind uint32

// The kinds of message (ringbroker_msg_view_t.kind).
const (
	// KindSubject is a subject message (publish/subscribe, request-reply).
	KindSubject Kind = C.RINGBROKER_MSG_SUBJECT
	// KindStream is a stream record.
	KindStream Kind = C.RINGBROKER_MSG_STREAM
	// KindQueue is a queue delivery.
	KindQueue Kind = C.RINGBROKER_MSG_QUEUE
)

// String names the kind.
func (k Kind) String() string {
	switch k {
	case KindSubject:
		return "subject"
	case KindStream:
		return "stream"
	case KindQueue:
		return "queue"
	}
	return "unknown"
}

// Header is one header of a message or record: a name and a value.
type Header struct {
	// Name is the header's name.
	Name string
	// Value is the header's bytes.
	Value []byte
}

// Msg is a received message. Its fields are copies in Go memory, valid for as long
// as the program keeps them. The library's message behind it is what Ack, Nak,
// Nack, Commit, Respond and Headers work on; Release frees it. A subject message
// without headers keeps no library message at all (it was freed when received:
// Respond publishes to Reply, Release only marks it released); those a consumer
// receives in one batch share two allocations (their Msgs, their bytes), so keeping
// one keeps its batch's (copy Data to keep only the payload). A Msg that is never
// released is freed when the garbage collector finds it unreachable, but releasing
// deterministically keeps the library's memory bounded under load. A Msg may be
// used from several goroutines.
type Msg struct {
	// Kind is the model the message came from.
	Kind Kind
	// Subject is the subject of a subject message or stream record, the routing key
	// of a queue delivery.
	Subject string
	// Reply is where a request's answer goes ("" if none); see Respond.
	Reply string
	// Data is the payload.
	Data []byte
	// Key is a stream record's key (nil if none).
	Key []byte
	// Exchange is the exchange a queue delivery was published to.
	Exchange string
	// Queue is the queue a delivery came from.
	Queue string
	// Partition is a stream record's partition.
	Partition uint32
	// Offset is a stream record's offset in its partition.
	Offset uint64
	// Timestamp is when a stream record was stored (zero for other kinds).
	Timestamp time.Time
	// DeliveryCount is 1 on a stream record's first delivery.
	DeliveryCount uint32
	// DeliveryTag identifies a queue delivery (see Consumer.QueueAck).
	DeliveryTag uint64
	// Redelivered says a queue delivery may have been delivered before.
	Redelivered bool
	// Priority is a queue delivery's priority (0 to 255).
	Priority uint8
	// Persistent says a queue delivery is stored on disk in a durable queue.
	Persistent bool

	headerCount int
	consumer    *Consumer // nil for request replies
	broker      *Broker

	mu      sync.Mutex
	c       *C.ringbroker_msg_t // nil once released, and always nil when detached
	cleanup runtime.Cleanup
	// detached: a subject message without headers, every field copied and the
	// library's message freed at once (see newMsg); released is its Release.
	detached bool
	released bool
}

// newMsg wraps a message the library handed over, copying its view's fields into
// Go memory (one allocation for all of its bytes). A subject message without headers
// needs nothing more from the library (Respond publishes to Reply; it is never
// acknowledged), so it comes back detached: no cleanup is registered and the caller
// frees c at once (rbgo_free_detached frees a fetched batch's in one crossing).
func newMsg(c *C.ringbroker_msg_t, v *C.ringbroker_msg_view_t, consumer *Consumer, b *Broker) *Msg {
	m := &Msg{
		Kind:          Kind(v.kind),
		Partition:     uint32(v.partition),
		Offset:        uint64(v.offset),
		DeliveryCount: uint32(v.delivery_count),
		DeliveryTag:   uint64(v.delivery_tag),
		Redelivered:   bool(v.redelivered),
		Priority:      uint8(v.priority),
		Persistent:    bool(v.persistent),
		headerCount:   int(v.header_count),
		consumer:      consumer,
		broker:        b,
		c:             c,
	}
	if m.Kind == KindStream {
		m.Timestamp = time.UnixMilli(int64(v.timestamp_ms))
	}
	total := v.payload_len + v.subject_len + v.reply_len + v.key_len + v.exchange_len + v.queue_len
	buf := make([]byte, int(total))
	m.Data = copyOut(&buf, unsafe.Pointer(v.payload), v.payload_len)
	m.Key = copyOut(&buf, unsafe.Pointer(v.key), v.key_len)
	m.Subject = stringOf(copyOut(&buf, unsafe.Pointer(v.subject), v.subject_len))
	m.Reply = stringOf(copyOut(&buf, unsafe.Pointer(v.reply), v.reply_len))
	m.Exchange = stringOf(copyOut(&buf, unsafe.Pointer(v.exchange), v.exchange_len))
	m.Queue = stringOf(copyOut(&buf, unsafe.Pointer(v.queue), v.queue_len))
	if isDetached(v) {
		m.c, m.detached = nil, true
		return m
	}
	m.cleanup = runtime.AddCleanup(m, freeMsg, c)
	return m
}

// detachedSlab makes the detached messages of one fetched batch (see
// Consumer.fetch): each Msg is the next of msgs, its fields copied to the next bytes
// of bytes, and a subject equal to the previous message's is shared, not copied.
type detachedSlab struct {
	msgs        []Msg
	bytes       []byte
	lastSubject string
}

// next fills the next Msg of the slab from view v (a detached one) and returns it.
func (s *detachedSlab) next(v *C.ringbroker_msg_view_t, c *Consumer) *Msg {
	m := &s.msgs[0]
	s.msgs = s.msgs[1:]
	m.Kind, m.consumer, m.broker, m.detached = KindSubject, c, c.b, true
	subject := unsafe.Slice((*byte)(unsafe.Pointer(v.subject)), int(v.subject_len))
	if string(subject) == s.lastSubject { // compared in place: no conversion is made
		m.Subject = s.lastSubject
	} else {
		m.Subject = stringOf(copyOut(&s.bytes, unsafe.Pointer(v.subject), v.subject_len))
		s.lastSubject = m.Subject
	}
	m.Reply = stringOf(copyOut(&s.bytes, unsafe.Pointer(v.reply), v.reply_len))
	m.Data = copyOut(&s.bytes, unsafe.Pointer(v.payload), v.payload_len)
	return m
}

// copyOut copies the n bytes at p to the front of *buf and moves *buf past them. The
// copy is capped at its length, so an append by the program cannot reach the bytes
// after it; nil when there is nothing to copy.
func copyOut(buf *[]byte, p unsafe.Pointer, n C.uintptr_t) []byte {
	if n == 0 || p == nil {
		return nil
	}
	dst := (*buf)[:n:n]
	copy(dst, unsafe.Slice((*byte)(p), int(n)))
	*buf = (*buf)[n:]
	return dst
}

// stringOf is b as a string without a copy: b is a copyOut result, never written
// again by the binding.
func stringOf(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// isDetached says whether newMsg detaches the message of view v (the same test as
// rbgo_free_detached's).
func isDetached(v *C.ringbroker_msg_view_t) bool {
	return Kind(v.kind) == KindSubject && v.header_count == 0
}

// freeMsg is the safety net: it frees a message the program dropped unreleased.
func freeMsg(c *C.ringbroker_msg_t) { C.ringbroker_msg_free(c) }

// Release frees the library's message. Data and the other fields stay valid (they
// are Go copies); Ack, Nak, Nack, Commit, Respond and Headers return ErrReleased
// afterwards. Releasing twice is a no-op.
func (m *Msg) Release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.detached {
		m.released = true
		return
	}
	if m.c == nil {
		return
	}
	m.cleanup.Stop()
	C.ringbroker_msg_free(m.c)
	m.c = nil
}

// with runs f with the live message; ErrReleased once released, ErrWrongKind for a
// detached subject message (f only acknowledges or reads headers, which it has none).
func (m *Msg) with(f func(*C.ringbroker_msg_t) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.withLocked(f)
}

func (m *Msg) withLocked(f func(*C.ringbroker_msg_t) error) error {
	if m.detached && !m.released {
		return errNotAcknowledged
	}
	if m.c == nil {
		return ErrReleased
	}
	return f(m.c)
}

// errNotAcknowledged is what acknowledging a subject message returns.
var errNotAcknowledged = newError(StatusWrongKind, "a subject message is not acknowledged")

// Headers returns the message's headers, in order.
func (m *Msg) Headers() ([]Header, error) {
	if m.headerCount == 0 {
		return nil, nil
	}
	var out []Header
	err := m.with(func(c *C.ringbroker_msg_t) error {
		raw := make([]C.rbgo_header, m.headerCount)
		err := call(func() C.ringbroker_status {
			return C.rbgo_headers(c, &raw[0], C.size_t(len(raw)))
		})
		if err != nil {
			return err
		}
		out = make([]Header, len(raw))
		for i, h := range raw {
			out[i] = Header{
				Name:  string(goBytes(unsafe.Pointer(h.name), C.uintptr_t(h.name_len))),
				Value: goBytes(unsafe.Pointer(h.value), C.uintptr_t(h.value_len)),
			}
		}
		return nil
	})
	return out, err
}

// Header returns the value of the first header named name, and whether there is one.
func (m *Msg) Header(name string) ([]byte, bool) {
	hs, err := m.Headers()
	if err != nil {
		return nil, false
	}
	for _, h := range hs {
		if h.Name == name {
			return h.Value, true
		}
	}
	return nil, false
}

// consumerCall runs an acknowledgement on the consumer that received m.
func (m *Msg) consumerCall(f func(*C.ringbroker_consumer_t, *C.ringbroker_msg_t) C.ringbroker_status) error {
	if m.consumer == nil {
		return newError(StatusWrongKind, "the message did not come from a consumer")
	}
	return m.with(func(c *C.ringbroker_msg_t) error {
		return m.consumer.do(func(cc *C.ringbroker_consumer_t) C.ringbroker_status { return f(cc, c) })
	})
}

// Ack acknowledges a stream record or a queue delivery. ErrWrongKind for a subject
// message.
func (m *Msg) Ack() error {
	return m.consumerCall(func(cc *C.ringbroker_consumer_t, c *C.ringbroker_msg_t) C.ringbroker_status {
		return C.ringbroker_ack(cc, c)
	})
}

// Nak asks for a stream record again after delay (rounded down to milliseconds). For
// a queue delivery, delay must be 0 and the delivery goes back to the queue (as
// Nack(true)). ErrWrongKind for a subject message.
func (m *Msg) Nak(delay time.Duration) error {
	if delay < 0 || delay.Milliseconds() > int64(^uint32(0)) {
		return newError(StatusInvalidArgument, "Nak delay out of range")
	}
	ms := C.uint32_t(delay.Milliseconds())
	return m.consumerCall(func(cc *C.ringbroker_consumer_t, c *C.ringbroker_msg_t) C.ringbroker_status {
		return C.ringbroker_nack(cc, c, ms, 1)
	})
}

// Nack rejects a queue delivery: back to the queue if requeue, else dead-lettered
// (or dropped). For a stream record it asks for it again at once. ErrWrongKind for a
// subject message.
func (m *Msg) Nack(requeue bool) error {
	return m.consumerCall(func(cc *C.ringbroker_consumer_t, c *C.ringbroker_msg_t) C.ringbroker_status {
		return C.ringbroker_nack(cc, c, 0, cbool(requeue))
	})
}

// Reject rejects a queue delivery without requeueing it: it is dead-lettered, or
// dropped if the queue has no dead-letter exchange.
func (m *Msg) Reject() error { return m.Nack(false) }

// Commit acknowledges every record of this record's partition that its consumer
// received up to and including it (a cumulative commit). Stream records only.
func (m *Msg) Commit() error {
	return m.consumerCall(func(cc *C.ringbroker_consumer_t, c *C.ringbroker_msg_t) C.ringbroker_status {
		return C.ringbroker_commit(cc, c)
	})
}

// Respond answers a request (a subject message with a Reply) with data.
// ErrInvalidArgument if the message has no reply subject.
func (m *Msg) Respond(data []byte) error {
	m.mu.Lock()
	detached, released := m.detached, m.released
	m.mu.Unlock()
	if detached {
		if released {
			return ErrReleased
		}
		if m.Reply == "" {
			return newError(StatusInvalidArgument, "the message has no reply subject")
		}
		return m.broker.Publish(m.Reply, data)
	}
	return m.with(func(c *C.ringbroker_msg_t) error {
		return m.broker.do(func() C.ringbroker_status {
			return C.ringbroker_respond(m.broker.h, c, bytesPtr(data), C.uintptr_t(len(data)))
		})
	})
}
