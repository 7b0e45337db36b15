package ringbroker

// #include "ringbroker.h"
import "C"

import (
	"context"
	"strconv"
	"time"
	"unsafe"
)

// StreamConfig defines a stream (CreateStream, UpdateStream). Zero fields keep the
// library's defaults.
type StreamConfig struct {
	// Name names the stream (required).
	Name string
	// Subjects are the patterns whose messages the stream captures.
	Subjects []string
	// Partitions is how many partitions it has (fixed at creation).
	Partitions int
	// Durability is "always", "none" or "batch:<max_delay_ms>:<max_bytes>".
	Durability string
	// MaxRecords, MaxBytes and MaxAge bound what is retained.
	MaxRecords uint64
	// MaxBytes bounds the retained bytes.
	MaxBytes uint64
	// MaxAge bounds the retained records' age.
	MaxAge time.Duration
	// MaxRecordBytes is the largest record accepted.
	MaxRecordBytes uint64
	// DedupWindow is how long a Msg-Id header deduplicates.
	DedupWindow time.Duration
	// DeadLetter names the stream records go to after MaxDeliver deliveries.
	DeadLetter string
	// SegmentBytesMax is the size of each segment file.
	SegmentBytesMax uint64
}

func (s StreamConfig) pairs() [][2]string {
	var p configPairs
	p.str("name", s.Name)
	p.list("subjects", s.Subjects)
	p.uint("partitions", uint64(max(s.Partitions, 0)))
	p.str("durability", s.Durability)
	p.uint("max_records", s.MaxRecords)
	p.uint("max_bytes", s.MaxBytes)
	p.millis("max_age_ms", s.MaxAge)
	p.uint("max_record_bytes", s.MaxRecordBytes)
	p.millis("dedup_window_ms", s.DedupWindow)
	p.str("dead_letter", s.DeadLetter)
	p.uint("segment_bytes_max", s.SegmentBytesMax)
	return p
}

// StreamInfo is a stream's figures.
type StreamInfo struct {
	// Partitions is how many partitions the stream has.
	Partitions uint32
	// Records is how many records are retained, in all partitions.
	Records uint64
	// Bytes is the size of the segments, in all partitions.
	Bytes uint64
}

// CreateStream creates a stream; idempotent for the same definition.
// ErrAlreadyExists for a different one with that name (or a subject another stream
// captures), ErrInvalidArgument for a bad definition.
func (b *Broker) CreateStream(ctx context.Context, cfg StreamConfig) error {
	return b.blockingWith(ctx, cfg.pairs(), func(c *C.ringbroker_config) C.ringbroker_status { return C.ringbroker_stream_create(b.h, c) })
}

// UpdateStream changes a stream's retention, record size limit, dedup window or
// dead-letter stream; cfg holds the whole definition. ErrNotFound,
// ErrInvalidArgument (a change of what is fixed at creation).
func (b *Broker) UpdateStream(ctx context.Context, cfg StreamConfig) error {
	return b.blockingWith(ctx, cfg.pairs(), func(c *C.ringbroker_config) C.ringbroker_status { return C.ringbroker_stream_update(b.h, c) })
}

// DeleteStream deletes a stream, its records and its consumers. ErrNotFound.
func (b *Broker) DeleteStream(ctx context.Context, name string) error {
	n, err := cstring("stream", name)
	if err != nil {
		return err
	}
	return b.blocking(ctx, func() C.ringbroker_status { return C.ringbroker_stream_delete(b.h, n) }, nil)
}

// StreamInfo returns a stream's figures. ErrNotFound.
func (b *Broker) StreamInfo(ctx context.Context, name string) (StreamInfo, error) {
	n, err := cstring("stream", name)
	if err != nil {
		return StreamInfo{}, err
	}
	info := new(C.ringbroker_stream_info_t)
	if err := b.blocking(ctx, func() C.ringbroker_status { return C.ringbroker_stream_info(b.h, n, info) }, nil); err != nil {
		return StreamInfo{}, err
	}
	return StreamInfo{Partitions: uint32(info.partitions), Records: uint64(info.records), Bytes: uint64(info.bytes)}, nil
}

// Record is a record to publish to a stream: the stream is the one whose subjects
// capture Subject. A "Msg-Id" header deduplicates within the stream's window.
type Record struct {
	// Subject routes the record to its stream.
	Subject string
	// Key keeps records with one key in order in one partition (nil: none).
	Key []byte
	// Headers are stored with the record.
	Headers []Header
	// Data is the payload.
	Data []byte
}

// PublishResult is how one record of a publish went.
type PublishResult struct {
	// Err is nil if the record was stored (or was a duplicate of a stored one).
	Err error
	// Partition is the partition it is in.
	Partition uint32
	// Offset is its offset there.
	Offset uint64
	// Duplicate says it duplicated a record within the dedup window (not stored again).
	Duplicate bool
}

// recordsArena copies records into C memory.
func recordsArena(records []Record) (*arena, []C.ringbroker_record, error) {
	var size arenaSize
	size.add(uintptr(len(records)) * C.sizeof_ringbroker_record)
	for i := range records {
		size.str(records[i].Subject)
		size.bytes(records[i].Key)
		size.headers(records[i].Headers)
		size.bytes(records[i].Data)
	}
	a := newArena(size)
	arr := unsafe.Slice((*C.ringbroker_record)(a.alloc(uintptr(len(records))*C.sizeof_ringbroker_record)), len(records))
	for i := range records {
		r := &records[i]
		var err error
		if arr[i].subject, err = a.str("subject", r.Subject); err != nil {
			a.free()
			return nil, nil, err
		}
		arr[i].key = a.bytes(r.Key)
		arr[i].key_len = C.uintptr_t(len(r.Key))
		if arr[i].headers, err = a.headers(r.Headers); err != nil {
			a.free()
			return nil, nil, err
		}
		arr[i].headers_len = C.uintptr_t(len(r.Headers))
		arr[i].payload = a.bytes(r.Data)
		arr[i].payload_len = C.uintptr_t(len(r.Data))
	}
	return a, arr, nil
}

// PublishRecords publishes records in one call and waits until each is stored
// under its stream's durability policy, or ctx ends (ctx.Err(); the records may
// still be stored). The results are in the records' order; the error is the first
// record's failure, if any (the others may have been stored: see the results).
// One cgo call for the batch; the wait parks on the broker's completion queue.
func (b *Broker) PublishRecords(ctx context.Context, records ...Record) ([]PublishResult, error) {
	if len(records) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a, arr, err := recordsArena(records)
	if err != nil {
		return nil, err
	}
	token, ch, err := b.completions.register(len(records), true)
	if err != nil {
		a.free()
		return nil, err
	}
	err = b.do(func() C.ringbroker_status {
		return C.ringbroker_stream_publish_async(b.h, &arr[0], C.uintptr_t(len(arr)), C.uint64_t(token))
	})
	a.free()
	if err != nil {
		b.completions.forget(token, ch)
		return nil, err
	}
	got, err := b.completions.await(ctx, token, ch, len(records))
	if err != nil {
		return nil, err
	}
	results := make([]PublishResult, len(got))
	var first error
	for i, c := range got {
		results[i] = PublishResult{Err: c.err, Partition: c.partition, Offset: c.offset, Duplicate: c.duplicate}
		if first == nil && c.err != nil {
			first = c.err
		}
	}
	return results, first
}

// PublishRecord publishes one record and waits until it is stored; as
// PublishRecords.
func (b *Broker) PublishRecord(ctx context.Context, r Record) (PublishResult, error) {
	res, err := b.PublishRecords(ctx, r)
	if len(res) == 0 {
		return PublishResult{Err: err}, err
	}
	return res[0], err
}

// PublishRecordsNoWait publishes records without waiting (fire and forget): it
// returns once they are queued; a record a stream refuses is lost silently.
func (b *Broker) PublishRecordsNoWait(records ...Record) error {
	if len(records) == 0 {
		return nil
	}
	a, arr, err := recordsArena(records)
	if err != nil {
		return err
	}
	defer a.free()
	return b.do(func() C.ringbroker_status {
		return C.ringbroker_stream_publish_nowait(b.h, &arr[0], C.uintptr_t(len(arr)))
	})
}

// Where a consumer starts (ConsumerConfig.Deliver).
const (
	// DeliverAll starts at the first retained record.
	DeliverAll = "all"
	// DeliverNew starts with records stored after the consumer is created.
	DeliverNew = "new"
)

// DeliverOffset starts at offset n of every partition.
func DeliverOffset(n uint64) string { return "offset:" + strconv.FormatUint(n, 10) }

// DeliverTime starts at the first record stored at or after t.
func DeliverTime(t time.Time) string { return "time:" + strconv.FormatInt(t.UnixMilli(), 10) }

// ConsumerConfig defines a stream consumer (CreateConsumer, ConsumeEphemeral). Zero
// fields keep the library's defaults.
type ConsumerConfig struct {
	// Durable names a durable consumer (CreateConsumer); empty for an ephemeral one.
	Durable string
	// Deliver is where it starts: DeliverAll, DeliverNew, DeliverOffset(n) or
	// DeliverTime(t).
	Deliver string
	// Filter is a subject pattern: only matching records are delivered.
	Filter string
	// NoAck delivers without acknowledgements (ack = none).
	NoAck bool
	// AckWait is how long a record may stay unacknowledged before redelivery.
	AckWait time.Duration
	// MaxDeliver is how many times a record is delivered before it is dead-lettered.
	MaxDeliver uint64
	// MaxAckPending bounds the unacknowledged records delivered.
	MaxAckPending uint64
	// HeartbeatTimeout is how long a silent member keeps its partitions.
	HeartbeatTimeout time.Duration
}

func (c ConsumerConfig) pairs() [][2]string {
	var p configPairs
	p.str("durable", c.Durable)
	p.str("deliver", c.Deliver)
	p.str("filter", c.Filter)
	if c.NoAck {
		p.str("ack", "none")
	}
	p.millis("ack_wait_ms", c.AckWait)
	p.uint("max_deliver", c.MaxDeliver)
	p.uint("max_ack_pending", c.MaxAckPending)
	p.millis("heartbeat_timeout_ms", c.HeartbeatTimeout)
	return p
}

// ConsumerInfo is a durable consumer's figures.
type ConsumerInfo struct {
	// Partitions is how many partitions its stream has.
	Partitions uint32
	// Pending is how many records were delivered and not acknowledged.
	Pending uint64
	// Assigned is how many partitions are assigned to a member now.
	Assigned uint32
}

// CreateConsumer creates durable consumer cfg.Durable on stream; idempotent for the
// same definition. ErrNotFound (no stream), ErrAlreadyExists (a different
// definition), ErrInvalidArgument.
func (b *Broker) CreateConsumer(ctx context.Context, stream string, cfg ConsumerConfig) error {
	s, err := cstring("stream", stream)
	if err != nil {
		return err
	}
	return b.blockingWith(ctx, cfg.pairs(), func(c *C.ringbroker_config) C.ringbroker_status { return C.ringbroker_consumer_create(b.h, s, c) })
}

// DeleteConsumer deletes durable consumer name of stream. ErrNotFound.
func (b *Broker) DeleteConsumer(ctx context.Context, stream, name string) error {
	s, err := cstring("stream", stream)
	if err != nil {
		return err
	}
	n, err := cstring("consumer", name)
	if err != nil {
		return err
	}
	return b.blocking(ctx, func() C.ringbroker_status { return C.ringbroker_consumer_delete(b.h, s, n) }, nil)
}

// ConsumerInfo returns durable consumer name's figures. ErrNotFound.
func (b *Broker) ConsumerInfo(ctx context.Context, stream, name string) (ConsumerInfo, error) {
	s, err := cstring("stream", stream)
	if err != nil {
		return ConsumerInfo{}, err
	}
	n, err := cstring("consumer", name)
	if err != nil {
		return ConsumerInfo{}, err
	}
	info := new(C.ringbroker_consumer_info_t)
	if err := b.blocking(ctx, func() C.ringbroker_status { return C.ringbroker_consumer_info(b.h, s, n, info) }, nil); err != nil {
		return ConsumerInfo{}, err
	}
	return ConsumerInfo{Partitions: uint32(info.partitions), Pending: uint64(info.pending), Assigned: uint32(info.assigned)}, nil
}

// Consume joins durable consumer name of stream as a new member of its group: the
// group shares the stream's partitions among its members. Acknowledge with
// Msg.Ack, Msg.Commit, Msg.Nak or Consumer.AckBatch. ErrNotFound.
func (b *Broker) Consume(ctx context.Context, stream, name string) (*Consumer, error) {
	s, err := cstring("stream", stream)
	if err != nil {
		return nil, err
	}
	n, err := cstring("consumer", name)
	if err != nil {
		return nil, err
	}
	return b.newConsumerCtx(ctx, KindStream, func(out **C.ringbroker_consumer_t) C.ringbroker_status {
		return C.ringbroker_stream_consume(b.h, s, n, nil, out)
	}, nil)
}

// ConsumeEphemeral starts an ephemeral consumer of stream from cfg (Durable must be
// empty); it is forgotten when closed.
func (b *Broker) ConsumeEphemeral(ctx context.Context, stream string, cfg ConsumerConfig) (*Consumer, error) {
	s, err := cstring("stream", stream)
	if err != nil {
		return nil, err
	}
	c, err := makeConfig(cfg.pairs())
	if err != nil {
		return nil, err
	}
	return b.newConsumerCtx(ctx, KindStream, func(out **C.ringbroker_consumer_t) C.ringbroker_status {
		return C.ringbroker_stream_consume(b.h, s, nil, c, out)
	}, func() { C.ringbroker_config_free(c) })
}
