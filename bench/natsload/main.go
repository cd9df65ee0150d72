// natsload: the NATS JetStream side of Raftka's comparison suite (bench/), driven with
// the official Go client (nats.go), NATS's fastest. Built by bench/_nats.py in GOPATH
// mode against Debian's golang-github-nats-io-go-nats-dev, so no module downloads:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o natsload bench/natsload/main.go
//
// One run does one mode and prints one JSON object on stdout; while it runs it prints
// "progress N" lines on stderr (N = messages done so far) for the caller's progress bar.
//
//	pub      async publish (PublishAsync, at most -window unacked messages) to the
//	         -subjects round-robin for -duration, or until -count messages are acked
//	         (a message whose ack failed or timed out is published again); rate of acked
//	         messages
//	lat      publish at a fixed -rate for -duration; publish-to-ack latency of each message
//	consume  pull-consume -count messages from -stream (ephemeral, AckNone, batches of
//	         -batch) from the first message; rate
//	work     -workers work-queue members (one connection each) share one durable pull
//	         consumer (AckExplicit) of -stream: each fetches batches of -batch and acks
//	         every message on its own (Ack, not awaited); done when -count messages were
//	         delivered and the stream (WorkQueue retention) holds no message: every ack
//	         was applied; rate of acknowledged messages
//	e2e      a push consumer (AckNone, new messages only) plus publishing at -rate; the
//	         time from publish to delivery of each message (send time in the payload)
//
// Nothing waits forever. nats.go 1.22's PubAckFuture has no timeout: a publish whose ack
// never comes (the stream leader changed while it was in flight, e.g. when the servers
// are starved of CPU) stays pending for ever, and with it the old in-order ack drain and
// one slot of nats.go's own window (PublishAsyncMaxPending), which collapsed. So the
// window is ours (a slot is freed by an ack, an error or -ack-timeout, and a lost ack
// holds only its own slot), nats.go's limit is set out of reach, and any mode exits
// non-zero (a message on stderr) when nothing progresses for -stall-timeout.
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

type result map[string]interface{}

var ackTimeout, stallTimeout, handoff time.Duration

// watchdog exits the program when *counter has not moved for stallTimeout (until stop).
func watchdog(what string, counter *int64, stop chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, since := atomic.LoadInt64(counter), time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			if v := atomic.LoadInt64(counter); v != last {
				last, since = v, now
			} else if now.Sub(since) >= stallTimeout {
				fail("stalled: no message %s for %s (at %d)", what, stallTimeout, v)
			}
		}
	}
}

// await waits for one publish's ack until deadline: "ok", "error" or "timeout".
func await(f nats.PubAckFuture, deadline time.Time) string {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-f.Ok():
		return "ok"
	case <-f.Err():
		return "error"
	case <-timer.C:
		return "timeout"
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "natsload: "+format+"\n", args...)
	os.Exit(1)
}

// progress prints the counter every 200 ms until stop is closed.
func progress(counter *int64, stop chan struct{}) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			fmt.Fprintf(os.Stderr, "progress %d\n", atomic.LoadInt64(counter))
		case <-stop:
			fmt.Fprintf(os.Stderr, "progress %d\n", atomic.LoadInt64(counter))
			return
		}
	}
}

func percentiles(samples []time.Duration) result {
	if len(samples) == 0 {
		return result{"count": 0}
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	at := func(q float64) float64 {
		i := int(q * float64(len(samples)))
		if i >= len(samples) {
			i = len(samples) - 1
		}
		return float64(samples[i].Microseconds()) / 1000
	}
	var sum time.Duration
	for _, s := range samples {
		sum += s
	}
	return result{
		"count": len(samples), "p50_ms": at(0.50), "p99_ms": at(0.99), "p999_ms": at(0.999),
		"max_ms":  float64(samples[len(samples)-1].Microseconds()) / 1000,
		"mean_ms": float64(sum.Microseconds()) / 1000 / float64(len(samples)),
	}
}

func payload(size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

func main() {
	mode := flag.String("mode", "pub", "pub | lat | consume | work | e2e")
	workers := flag.Int("workers", 3, "work-queue members (work)")
	url := flag.String("url", nats.DefaultURL, "server URL(s), comma-separated")
	subjects := flag.String("subjects", "bench.0", "comma-separated subjects (pub/lat/e2e)")
	stream := flag.String("stream", "", "stream to consume (consume)")
	size := flag.Int("size", 100, "message size in bytes")
	duration := flag.Duration("duration", 10*time.Second, "how long to publish")
	count := flag.Int64("count", 0, "messages to publish (pub, 0 = until -duration) or consume")
	window := flag.Int("window", 4000, "unacked async publishes at most")
	rate := flag.Float64("rate", 1000, "messages per second (lat, e2e)")
	batch := flag.Int("batch", 1000, "pull batch size (consume)")
	flag.DurationVar(&ackTimeout, "ack-timeout", 10*time.Second,
		"a publish not acked by then is counted as timed out (and, with -count, sent again)")
	flag.DurationVar(&handoff, "handoff", 250*time.Millisecond,
		"pub: an ack pending this long after its publish is awaited apart from the others")
	flag.DurationVar(&stallTimeout, "stall-timeout", 60*time.Second,
		"exit with an error when nothing is acked/received for this long")
	flag.Parse()

	nc, err := nats.Connect(*url, nats.Name("raftka-bench-natsload"),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		fail("connect: %v", err)
	}
	defer nc.Close()
	// nats.go's own window never releases the slot of an ack that never comes; ours does
	// (see the top of the file), so nats.go's is out of reach.
	js, err := nc.JetStream(nats.PublishAsyncMaxPending(math.MaxInt32))
	if err != nil {
		fail("jetstream: %v", err)
	}
	subs := strings.Split(*subjects, ",")
	var out result
	switch *mode {
	case "pub":
		out = runPub(js, subs, *size, *duration, *count, *window)
	case "lat":
		out = runLat(js, subs[0], *size, *duration, *rate, *window)
	case "consume":
		out = runConsume(js, subs[0], *stream, *count, *batch)
	case "work":
		out = runWork(*url, js, subs[0], *stream, *count, *batch, *workers)
	case "e2e":
		out = runE2E(js, subs[0], *size, *duration, *rate)
	default:
		fail("unknown mode %q", *mode)
	}
	out["mode"] = *mode
	out["client"] = "nats.go " + nats.Version
	enc, _ := json.Marshal(out)
	fmt.Println(string(enc))
}

func runPub(js nats.JetStreamContext, subs []string, size int, duration time.Duration,
	count int64, window int) result {
	data := payload(size)
	var acked, errored, timedOut, resolved, handedOff int64
	stop := make(chan struct{})
	go progress(&acked, stop)
	go watchdog("acked", &acked, stop)
	type inflight struct {
		f         nats.PubAckFuture
		published time.Time
	}
	// The window: a publish takes a slot, its outcome frees it: the ack, an error, or
	// -ack-timeout. Outcomes are drained in publish order (the acks of a stream come in
	// order), but a future still pending -handoff after its publish (a lost ack, or a very
	// slow one) is handed to a goroutine of its own, so it holds its slot, never the slots
	// of the acks behind it.
	slots := make(chan struct{}, window)
	queue := make(chan inflight, window)
	wake := make(chan struct{}, 1)
	resolve := func(outcome string) {
		switch outcome {
		case "ok":
			atomic.AddInt64(&acked, 1)
		case "error":
			atomic.AddInt64(&errored, 1)
		default:
			atomic.AddInt64(&timedOut, 1)
		}
		atomic.AddInt64(&resolved, 1)
		<-slots
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		var slow sync.WaitGroup
		for p := range queue {
			if o := await(p.f, p.published.Add(handoff)); o != "timeout" {
				resolve(o)
				continue
			}
			slow.Add(1)
			atomic.AddInt64(&handedOff, 1)
			go func(p inflight) {
				defer slow.Done()
				resolve(await(p.f, p.published.Add(ackTimeout)))
			}(p)
		}
		slow.Wait()
	}()
	start := time.Now()
	deadline := start.Add(duration)
	var sent, pubErrors int64
	for {
		if count > 0 {
			// until -count messages are acked; a failed or timed-out one is sent again
			a := atomic.LoadInt64(&acked)
			if a >= count {
				break
			}
			if a+(sent-atomic.LoadInt64(&resolved)) >= count {
				select { // the rest is in flight: wait for an outcome
				case <-wake:
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
		} else if !time.Now().Before(deadline) {
			break
		}
		slots <- struct{}{} // blocks while -window publishes are unresolved
		subj := subs[sent%int64(len(subs))]
		f, err := js.PublishAsync(subj, data)
		if err != nil { // e.g. the reconnect buffer is full: try again shortly
			<-slots
			pubErrors++
			time.Sleep(10 * time.Millisecond)
			continue
		}
		sent++
		queue <- inflight{f, time.Now()}
	}
	close(queue)
	<-drained
	elapsed := time.Since(start)
	close(stop)
	return result{"sent": sent, "acked": acked, "failed": errored, "timed_out": timedOut,
		"publish_errors": pubErrors, "window": window, "ack_timeout_s": ackTimeout.Seconds(),
		"handoff_s": handoff.Seconds(), "handed_off": handedOff,
		"seconds": elapsed.Seconds(), "rate": float64(acked) / elapsed.Seconds()}
}

// pace calls send(i) for i = 0, 1, ... at `rate` per second until `duration` has passed;
// when late it catches up at once (no coordinated omission in the send schedule).
func pace(rate float64, duration time.Duration, send func(i int64)) (int64, time.Duration) {
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	var i int64
	for {
		due := start.Add(time.Duration(i) * interval)
		if due.Sub(start) >= duration {
			break
		}
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		send(i)
		i++
	}
	return i, time.Since(start)
}

func runLat(js nats.JetStreamContext, subject string, size int, duration time.Duration,
	rate float64, window int) result {
	data := payload(size)
	var mu sync.Mutex
	samples := make([]time.Duration, 0, int(rate*duration.Seconds())+16)
	var done, failed, timedOut int64
	stop := make(chan struct{})
	go progress(&done, stop)
	go watchdog("acked", &done, stop)
	slots := make(chan struct{}, window) // at most -window unacked (an ack or a timeout frees one)
	var wg sync.WaitGroup
	sent, elapsed := pace(rate, duration, func(int64) {
		t0 := time.Now()
		slots <- struct{}{}
		f, err := js.PublishAsync(subject, data)
		if err != nil {
			<-slots
			atomic.AddInt64(&failed, 1)
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch await(f, t0.Add(ackTimeout)) {
			case "ok":
				d := time.Since(t0)
				mu.Lock()
				samples = append(samples, d)
				mu.Unlock()
				atomic.AddInt64(&done, 1)
			case "error":
				atomic.AddInt64(&failed, 1)
			default:
				atomic.AddInt64(&timedOut, 1)
			}
			<-slots
		}()
	})
	wg.Wait()
	close(stop)
	out := percentiles(samples)
	out["sent"], out["failed"], out["rate"] = sent, failed, float64(sent)/elapsed.Seconds()
	out["timed_out"], out["window"] = timedOut, window
	return out
}

func runConsume(js nats.JetStreamContext, subject, stream string, count int64,
	batch int) result {
	opts := []nats.SubOpt{nats.AckNone(), nats.DeliverAll()}
	if stream != "" {
		opts = append(opts, nats.BindStream(stream))
	}
	sub, err := js.PullSubscribe(subject, "", opts...)
	if err != nil {
		fail("pull subscribe: %v", err)
	}
	defer sub.Unsubscribe()
	var got, bytes, timeouts, noResponders int64
	stop := make(chan struct{})
	go progress(&got, stop)
	go watchdog("received", &got, stop)
	start := time.Now()
	for got < count {
		want := batch
		if rest := count - got; rest < int64(want) {
			want = int(rest)
		}
		msgs, err := sub.Fetch(want, nats.MaxWait(5*time.Second))
		if err == nats.ErrTimeout { // nothing within 5 s (a leader change?): the watchdog bounds it
			timeouts++
			continue
		}
		if err == nats.ErrNoResponders { // the consumer is not served yet (just created, or
			noResponders++ // its leader moved): ask again; the watchdog bounds it
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if err != nil {
			fail("fetch after %d messages: %v", got, err)
		}
		for _, m := range msgs {
			bytes += int64(len(m.Data))
		}
		atomic.AddInt64(&got, int64(len(msgs)))
	}
	elapsed := time.Since(start)
	close(stop)
	return result{"count": got, "bytes": bytes, "seconds": elapsed.Seconds(),
		"fetch_timeouts": timeouts, "no_responders": noResponders,
		"rate": float64(got) / elapsed.Seconds()}
}

func runE2E(js nats.JetStreamContext, subject string, size int, duration time.Duration,
	rate float64) result {
	if size < 8 {
		size = 8
	}
	var mu sync.Mutex
	samples := make([]time.Duration, 0, int(rate*duration.Seconds())+16)
	var received int64
	sub, err := js.Subscribe(subject, func(m *nats.Msg) {
		if len(m.Data) < 8 {
			return
		}
		sent := int64(binary.BigEndian.Uint64(m.Data))
		d := time.Duration(time.Now().UnixNano() - sent)
		mu.Lock()
		samples = append(samples, d)
		mu.Unlock()
		atomic.AddInt64(&received, 1)
	}, nats.AckNone(), nats.DeliverNew())
	if err != nil {
		fail("subscribe: %v", err)
	}
	defer sub.Unsubscribe()
	stop := make(chan struct{})
	go progress(&received, stop)
	go watchdog("delivered", &received, stop)
	var failed int64
	sent, elapsed := pace(rate, duration, func(int64) {
		data := payload(size)
		binary.BigEndian.PutUint64(data, uint64(time.Now().UnixNano()))
		if _, err := js.PublishAsync(subject, data); err != nil {
			atomic.AddInt64(&failed, 1)
		}
	})
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(10 * time.Second):
	}
	deadline := time.Now().Add(10 * time.Second)
	for atomic.LoadInt64(&received) < sent-failed && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	mu.Lock()
	out := percentiles(samples)
	mu.Unlock()
	out["sent"], out["failed"], out["rate"] = sent, failed, float64(sent)/elapsed.Seconds()
	return out
}

func runWork(url string, js nats.JetStreamContext, subject, stream string, count int64,
	batch, workers int) result {
	_, err := js.AddConsumer(stream, &nats.ConsumerConfig{
		Durable: "work", AckPolicy: nats.AckExplicitPolicy, DeliverPolicy: nats.DeliverAllPolicy,
		MaxAckPending: 1 << 20, AckWait: 30 * time.Second})
	if err != nil {
		fail("add consumer: %v", err)
	}
	var got int64
	stop := make(chan struct{})
	go progress(&got, stop)
	go watchdog("received", &got, stop)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := nats.Connect(url, nats.Name("raftka-bench-worker"))
			if err != nil {
				fail("connect: %v", err)
			}
			defer nc.Close()
			wjs, _ := nc.JetStream()
			sub, err := wjs.PullSubscribe(subject, "work", nats.Bind(stream, "work"))
			if err != nil {
				fail("pull subscribe: %v", err)
			}
			for atomic.LoadInt64(&got) < count {
				msgs, err := sub.Fetch(batch, nats.MaxWait(500*time.Millisecond))
				if err == nats.ErrTimeout || err == nats.ErrNoResponders {
					continue
				}
				if err != nil {
					fail("fetch: %v", err)
				}
				for _, m := range msgs {
					m.Ack()
				}
				atomic.AddInt64(&got, int64(len(msgs)))
			}
			nc.Flush()
		}()
	}
	wg.Wait()
	for { // every ack applied: the work queue is empty
		info, err := js.StreamInfo(stream)
		if err == nil && info.State.Msgs == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	close(stop)
	return result{"count": got, "seconds": elapsed.Seconds(), "workers": workers,
		"rate": float64(got) / elapsed.Seconds()}
}
