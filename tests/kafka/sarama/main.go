// A Kafka client that shares no code with the others in tests/kafka: Go's sarama (Debian's
// golang-github-shopify-sarama-dev), built in GOPATH mode like bench/natsload.
//
//	sarama-check produce BOOTSTRAP TOPIC COUNT   idempotent producer, keys and headers;
//	                                             prints "partition offset" per record
//	sarama-check consume BOOTSTRAP TOPIC GROUP COUNT
//	                                             a consumer group member: reads COUNT
//	                                             records, marks and commits them, prints
//	                                             "partition offset key value header"
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

func config() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_1_0_0
	c.ClientID = "sarama-check"
	c.Metadata.Retry.Max = 20
	c.Metadata.Retry.Backoff = 250 * time.Millisecond
	return c
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func produce(brokers []string, topic string, count int) {
	c := config()
	c.Producer.Idempotent = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	c.Producer.Retry.Max = 20
	c.Net.MaxOpenRequests = 1
	p, err := sarama.NewSyncProducer(brokers, c)
	if err != nil {
		fail("producer: %v", err)
	}
	defer p.Close()
	for i := 0; i < count; i++ {
		partition, offset, err := p.SendMessage(&sarama.ProducerMessage{
			Topic:   topic,
			Key:     sarama.StringEncoder(fmt.Sprintf("k%d", i)),
			Value:   sarama.StringEncoder(fmt.Sprintf("v%d", i)),
			Headers: []sarama.RecordHeader{{Key: []byte("via"), Value: []byte("sarama")}},
		})
		if err != nil {
			fail("send %d: %v", i, err)
		}
		fmt.Printf("%d %d\n", partition, offset)
	}
}

type handler struct {
	mu    sync.Mutex
	want  int
	lines []string
	done  chan struct{}
	once  sync.Once
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		header := ""
		for _, rh := range m.Headers {
			header += string(rh.Key) + "=" + string(rh.Value)
		}
		s.MarkMessage(m, "")
		h.mu.Lock()
		h.lines = append(h.lines, fmt.Sprintf("%d %d %s %s %s", m.Partition, m.Offset,
			string(m.Key), string(m.Value), header))
		if len(h.lines) >= h.want {
			h.once.Do(func() { close(h.done) })
		}
		h.mu.Unlock()
	}
	return nil
}

func consume(brokers []string, topic, group string, count int) {
	c := config()
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.CommitInterval = 200 * time.Millisecond
	// sarama 1.22 commits with OffsetCommit v1 unless a retention is set (then v2); Kafka 4
	// and this listener serve v2 and later (the retention is ignored: offsets stay)
	c.Consumer.Offsets.Retention = 24 * time.Hour
	g, err := sarama.NewConsumerGroup(brokers, group, c)
	if err != nil {
		fail("consumer group: %v", err)
	}
	h := &handler{want: count, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 1)
	released := make(chan struct{})
	go func() {
		// Consume returns once its session is released, which commits the marked offsets
		defer close(released)
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, h); err != nil {
				errs <- err
				return
			}
		}
	}()
	select {
	case <-h.done:
	case err := <-errs:
		fail("consume: %v", err)
	case <-time.After(60 * time.Second):
		fail("consumed %d of %d records in 60 s", len(h.lines), count)
	}
	cancel()
	// as sarama's own example: wait for the session to end (and commit) before Close, whose
	// LeaveGroup would otherwise race the final OffsetCommit (refused: unknown member)
	<-released
	if err := g.Close(); err != nil {
		fail("close: %v", err)
	}
	h.mu.Lock()
	fmt.Println(strings.Join(h.lines, "\n"))
	h.mu.Unlock()
}

func main() {
	if len(os.Args) < 5 {
		fail("usage: sarama-check produce|consume BOOTSTRAP TOPIC ...")
	}
	brokers := strings.Split(os.Args[2], ",")
	switch os.Args[1] {
	case "produce":
		n, _ := strconv.Atoi(os.Args[4])
		produce(brokers, os.Args[3], n)
	case "consume":
		n, _ := strconv.Atoi(os.Args[5])
		consume(brokers, os.Args[3], os.Args[4], n)
	default:
		fail("unknown mode %q", os.Args[1])
	}
}
