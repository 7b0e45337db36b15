// Command requestreply runs a service answering requests on a subject with two
// responders in a queue group, then sends concurrent requests, each with its own
// deadline; it also shows the errors a caller sees: no responders, and a deadline
// that passes.
//
//	go run ./requestreply                          # an embedded broker
//	go run ./requestreply -url ringbroker://127.0.0.1:7070
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"example.invalid/ringbroker/bindings/go/ringbroker"
)

func open(ctx context.Context, url string) (*ringbroker.Broker, func(), error) {
	if url != "" {
		b, err := ringbroker.Connect(ctx, url)
		return b, func() {}, err
	}
	dir, err := os.MkdirTemp("", "requestreply-")
	if err != nil {
		return nil, nil, err
	}
	b, err := ringbroker.Open(ringbroker.Config{DataDir: dir, Shards: 2})
	return b, func() { os.RemoveAll(dir) }, err
}

func main() {
	url := flag.String("url", "", "a ringbrokerd to connect to (default: an embedded broker)")
	requests := flag.Int("requests", 200, "how many concurrent requests")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, cleanup, err := open(ctx, *url)
	if err != nil {
		log.Fatalf("requestreply: %v", err)
	}
	defer cleanup()
	defer b.Close()
	if err := run(ctx, b, *requests); err != nil {
		log.Fatalf("requestreply: %v", err)
	}
}

// serve answers every request on its subscription until the subscription closes.
func serve(sub *ringbroker.Consumer) {
	for m := range sub.Messages() {
		_ = m.Respond([]byte(strings.ToUpper(string(m.Data))))
		m.Release()
	}
}

func run(ctx context.Context, b *ringbroker.Broker, requests int) error {
	subject := fmt.Sprintf("upper.%d", time.Now().UnixNano())
	var served sync.WaitGroup
	defer served.Wait() // runs last: after the subscriptions close, their loops end
	for i := 0; i < 2; i++ {
		sub, err := b.QueueSubscribe(ctx, subject, "upper-service")
		if err != nil {
			return err
		}
		defer sub.Close()
		served.Add(1)
		go func() { defer served.Done(); serve(sub) }()
	}

	errs := make(chan error, requests)
	var wg sync.WaitGroup
	for i := 0; i < requests; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			reqCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			text := fmt.Sprintf("request %d", i)
			reply, err := b.Request(reqCtx, subject, []byte(text))
			if err != nil {
				errs <- err
				return
			}
			defer reply.Release()
			if string(reply.Data) != strings.ToUpper(text) {
				errs <- fmt.Errorf("request %d answered %q", i, reply.Data)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	fmt.Printf("requestreply: %d concurrent requests, each got its own reply\n", requests)

	_, err := b.Request(ctx, subject+".nobody", []byte("hello?"))
	if !errors.Is(err, ringbroker.ErrNoResponders) {
		return fmt.Errorf("expected no responders, got %v", err)
	}
	fmt.Println("requestreply: with no responder:", err)

	silent, err := b.Subscribe(ctx, subject+".silent") // listens, never answers
	if err != nil {
		return err
	}
	defer silent.Close()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = b.Request(short, subject+".silent", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("expected the deadline to pass, got %v", err)
	}
	fmt.Println("requestreply: with a silent responder:", err)
	return nil
}
