// Command consumergroup stores keyed orders in a partitioned stream, then reads them
// with a durable consumer whose two members share the partitions; each member
// receives through its Messages channel and commits what it processed.
//
//	go run ./consumergroup                          # an embedded broker
//	go run ./consumergroup -url ringbroker://127.0.0.1:7070
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"example.invalid/ringbroker/bindings/go/ringbroker"
)

func open(ctx context.Context, url string) (*ringbroker.Broker, func(), error) {
	if url != "" {
		b, err := ringbroker.Connect(ctx, url)
		return b, func() {}, err
	}
	dir, err := os.MkdirTemp("", "consumergroup-")
	if err != nil {
		return nil, nil, err
	}
	b, err := ringbroker.Open(ringbroker.Config{DataDir: dir, Shards: 2})
	return b, func() { os.RemoveAll(dir) }, err
}

func main() {
	url := flag.String("url", "", "a ringbrokerd to connect to (default: an embedded broker)")
	orders := flag.Int("orders", 200, "how many orders to store")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, cleanup, err := open(ctx, *url)
	if err != nil {
		log.Fatalf("consumergroup: %v", err)
	}
	defer cleanup()
	defer b.Close()
	if err := run(ctx, b, *orders); err != nil {
		log.Fatalf("consumergroup: %v", err)
	}
}

func run(ctx context.Context, b *ringbroker.Broker, orders int) error {
	stream := fmt.Sprintf("orders%d", time.Now().UnixNano())
	err := b.CreateStream(ctx, ringbroker.StreamConfig{
		Name: stream, Subjects: []string{stream + ".>"}, Partitions: 4, Durability: "always",
	})
	if err != nil {
		return err
	}
	defer b.DeleteStream(context.Background(), stream)

	records := make([]ringbroker.Record, orders)
	for i := range records {
		customer := fmt.Sprintf("customer-%d", i%10) // one customer's orders stay in order
		records[i] = ringbroker.Record{
			Subject: stream + ".created",
			Key:     []byte(customer),
			Headers: []ringbroker.Header{{Name: "Msg-Id", Value: []byte(fmt.Sprint("order-", i))}},
			Data:    []byte(fmt.Sprintf("order %d for %s", i, customer)),
		}
	}
	if _, err := b.PublishRecords(ctx, records...); err != nil {
		return err
	}
	fmt.Printf("consumergroup: %d orders stored in 4 partitions\n", orders)

	if err := b.CreateConsumer(ctx, stream, ringbroker.ConsumerConfig{
		Durable: "billing", Deliver: ringbroker.DeliverAll, AckWait: 30 * time.Second,
	}); err != nil {
		return err
	}
	members := make([]*ringbroker.Consumer, 2)
	for i := range members {
		if members[i], err = b.Consume(ctx, stream, "billing"); err != nil {
			return err
		}
		defer members[i].Close()
	}

	var mu sync.Mutex
	seen := make(map[string]bool)
	perMember := make([]int, len(members))
	groupCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case rec, ok := <-m.Messages():
					if !ok {
						return
					}
					// Process, then commit everything up to this record in its partition.
					if err := rec.Commit(); err != nil {
						log.Printf("member %d: commit: %v", i, err)
					}
					rec.Release()
					mu.Lock()
					perMember[i]++
					seen[string(rec.Data)] = true
					if len(seen) == orders {
						stop()
					}
					mu.Unlock()
				case <-groupCtx.Done():
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(seen) != orders {
		return fmt.Errorf("%d of %d orders processed: %w", len(seen), orders, ctx.Err())
	}
	fmt.Printf("consumergroup: %d orders processed by 2 members (%d and %d deliveries)\n",
		orders, perMember[0], perMember[1])
	return nil
}
