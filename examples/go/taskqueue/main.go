// Command taskqueue is a work queue: a producer publishes tasks through the default
// exchange and waits for their confirms; two workers consume with a prefetch and
// acknowledge each task once done.
//
//	go run ./taskqueue                          # an embedded broker in a temporary directory
//	go run ./taskqueue -url ringbroker://127.0.0.1:7070   # a running ringbrokerd
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"example.invalid/ringbroker/bindings/go/ringbroker"
)

func open(ctx context.Context, url, dataDir string) (*ringbroker.Broker, func(), error) {
	if url != "" {
		b, err := ringbroker.Connect(ctx, url)
		return b, func() {}, err
	}
	cleanup := func() {}
	if dataDir == "" {
		dir, err := os.MkdirTemp("", "taskqueue-")
		if err != nil {
			return nil, nil, err
		}
		dataDir, cleanup = dir, func() { os.RemoveAll(dir) }
	}
	b, err := ringbroker.Open(ringbroker.Config{DataDir: dataDir, Shards: 2})
	if err != nil {
		cleanup()
	}
	return b, cleanup, err
}

func main() {
	url := flag.String("url", "", "a ringbrokerd to connect to (default: an embedded broker)")
	dataDir := flag.String("data", "", "the embedded broker's data directory (default: a temporary one)")
	tasks := flag.Int("tasks", 100, "how many tasks to publish")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, cleanup, err := open(ctx, *url, *dataDir)
	if err != nil {
		log.Fatalf("taskqueue: %v", err)
	}
	defer cleanup()
	defer b.Close()
	if err := run(ctx, b, *tasks); err != nil {
		log.Fatalf("taskqueue: %v", err)
	}
}

func run(ctx context.Context, b *ringbroker.Broker, tasks int) error {
	queue := fmt.Sprintf("tasks-%d", time.Now().UnixNano())
	if _, err := b.DeclareQueue(ctx, ringbroker.QueueConfig{Name: queue, AutoDelete: true}); err != nil {
		return err
	}
	var done atomic.Int64
	perWorker := make([]int, 2)
	var wg sync.WaitGroup
	workCtx, stop := context.WithCancel(ctx)
	defer stop()
	for w := range perWorker {
		c, err := b.ConsumeQueue(ctx, queue, ringbroker.QueueConsumeConfig{Prefetch: 4})
		if err != nil {
			return err
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				m, err := c.Next(workCtx)
				if err != nil {
					return // stopped
				}
				// The work itself would go here.
				if err := m.Ack(); err != nil {
					log.Printf("worker %d: ack: %v", w, err)
				}
				m.Release()
				perWorker[w]++
				if done.Add(1) == int64(tasks) {
					stop()
				}
			}
		}()
	}
	batch := make([]ringbroker.Publishing, tasks)
	for i := range batch {
		batch[i] = ringbroker.Publishing{RoutingKey: queue, Data: []byte(fmt.Sprintf("task %d", i))}
	}
	confirms, err := b.PublishExchange(ctx, true, batch...)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	fmt.Printf("taskqueue: %d tasks confirmed (each reached %d queue)\n", len(confirms), confirms[0].Queues)
	wg.Wait()
	if n := done.Load(); n != int64(tasks) {
		return fmt.Errorf("%d of %d tasks done: %w", n, tasks, ctx.Err())
	}
	fmt.Printf("taskqueue: %d tasks done by 2 workers (%d and %d)\n", tasks, perWorker[0], perWorker[1])
	return nil
}
