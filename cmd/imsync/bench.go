package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
)

// runBench is `imsync bench`: a load generator. It starts a server of its
// own (durable store in a temporary directory) unless --server names one,
// and measures in the same run the bare quic-go echo rate of this machine,
// so that figures can be read as ratios.
func runBench(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	server := fs.String("server", "", "a running server (default: start one); several nodes of a cluster, comma-separated: the scenarios run with the devices spread over 1, 2, ... of them")
	data := fs.String("data", "", "the running server's data directory (for its key and certificate)")
	pairs := fs.Int("pairs", 128, "1:1 scenario: sender/receiver pairs, each receiver connected")
	groupSize := fs.Int("group", 100, "group scenario: members, all connected")
	groupSenders := fs.Int("group-senders", 16, "group scenario: members sending")
	duration := fs.Duration("duration", 5*time.Second, "length of each scenario")
	idle := fs.Int("idle", 1000, "idle devices for the memory measurement (0: skip)")
	scenarios := fs.String("scenarios", "echo,direct,group,idle", "which to run")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	run := map[string]bool{}
	for _, s := range strings.Split(*scenarios, ",") {
		run[strings.TrimSpace(s)] = true
	}
	b := &bench{out: out, duration: *duration}
	if *server == "" {
		stop, err := b.startServer()
		if err != nil {
			return err
		}
		defer stop()
	} else {
		if *data == "" {
			return fmt.Errorf("%w: bench --server needs --data DIR of that server (key and certificate)", errUsage)
		}
		if err := b.useServer(*server, *data); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "imsync bench against %s, %d cores, %s per scenario\n", b.addr, runtime.NumCPU(), *duration)
	if nodes := serverList(*server); len(nodes) > 1 {
		return b.benchNodes(ctx, out, nodes, run, *pairs, *groupSize, *groupSenders)
	}
	var report benchReport
	defer func() {
		if benchReported != nil {
			benchReported(report)
		}
	}()
	var echo float64
	if run["echo"] {
		var err error
		if echo, err = b.echo(ctx, *pairs); err != nil {
			return err
		}
		fmt.Fprintf(out, "bare quic-go echo: %.0f round trips/s (%d long-lived streams, 200-byte frames)\n", echo, *pairs)
		report.echo = echo
	}
	if run["direct"] {
		if b.stack != nil {
			// The layers below the edge, same run, same concurrency.
			store, actorRate, err := b.layers(ctx, *pairs)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "store alone: %.0f durable appends/s; grains alone (1:1 sends through actors.Service): %.0f msg/s\n", store, actorRate)
			b.below = actorRate
			report.store, report.grains = store, actorRate
		}
		r, err := b.scenario(ctx, "direct", *pairs, *pairs)
		if err != nil {
			return err
		}
		r.print(out, echo)
		report.results = append(report.results, r)
		if b.below > 0 {
			fmt.Fprintf(out, "  = %.0f%% of the grains-alone rate\n", 100*float64(r.sends)/r.elapsed.Seconds()/b.below)
		}
	}
	if run["group"] {
		r, err := b.scenario(ctx, "group", *groupSize, *groupSenders)
		if err != nil {
			return err
		}
		r.print(out, 0)
		report.results = append(report.results, r)
	}
	if run["idle"] && *idle > 0 {
		if err := b.idleMemory(ctx, *idle); err != nil {
			return err
		}
	}
	return nil
}

type bench struct {
	out      io.Writer
	duration time.Duration
	addr     string
	dataDir  string
	stack    *stack  // the server's insides, when bench started it
	below    float64 // grains-alone msg/s of this run
	key      *transport.Key
	tls      *tls.Config
	seq      atomic.Int64
	addrs    []string     // several nodes: devices spread over them (bench_cluster.go)
	dials    atomic.Int64 // picks the node of the next device
}

func (b *bench) startServer() (func(), error) {
	dir, err := os.MkdirTemp("", "imsync-bench-")
	if err != nil {
		return nil, err
	}
	st, err := startStack(dir, "", "127.0.0.1:0", nil, transport.Config{
		RequestsPerSecond: 1e9, RequestBurst: 1 << 30, MaxConnsPerUser: 1 << 20, MaxUnauthenticatedPerPrefix: 1 << 20, // the load is the point: from one address
	})
	if err != nil {
		return nil, err
	}
	if err := b.useServer(st.srv.Addr().String(), dir); err != nil {
		return nil, err
	}
	b.stack = st
	return func() {
		st.close()
		os.RemoveAll(dir)
	}, nil
}

func (b *bench) useServer(addr, dir string) error {
	key, err := transport.LoadOrCreateKey(dir)
	if err != nil {
		return err
	}
	pem, err := os.ReadFile(filepath.Join(dir, transport.CertFile))
	if err != nil {
		return err
	}
	if b.tls, err = client.PinnedTLS(pem); err != nil {
		return err
	}
	b.addr, b.key, b.dataDir = addr, key, dir
	return nil
}

func (b *bench) dial(ctx context.Context, user, device string, fromNewest bool) (*client.Client, error) {
	tok, err := b.key.Mint(user, device, time.Hour, time.Now())
	if err != nil {
		return nil, err
	}
	addr := b.addr
	if len(b.addrs) > 0 {
		addr = b.addrs[int(b.dials.Add(1))%len(b.addrs)]
	}
	// Hundreds of devices log in at once: quic-go refuses connections while
	// its accept queue is full, so try again a few times.
	for attempt := 0; ; attempt++ {
		c, err := client.Dial(ctx, client.Config{Addr: addr, Token: tok, TLS: b.tls, FromNewest: fromNewest, Client: "imsync-bench/1"})
		if err == nil || attempt == 5 || ctx.Err() != nil {
			return c, err
		}
		time.Sleep(time.Duration(50*(attempt+1)) * time.Millisecond)
	}
}

// layers measures, for `writers` concurrent writers during the scenario
// length, durable 200-byte appends straight into the server's store, and
// 1:1 sends straight into its actors.Service (no QUIC, no client library).
func (b *bench) layers(ctx context.Context, writers int) (storeRate, actorRate float64, err error) {
	d := min(b.duration, 3*time.Second)
	payload := make([]byte, 200)
	rate := func(op func(w, n int) error) (float64, error) {
		return rateOf(writers, d, func(w int) (func(n int) error, error) {
			return func(n int) error { return op(w, n) }, nil
		})
	}
	run := b.seq.Add(1)
	storeRate, err = rate(func(w, _ int) error {
		_, err := b.stack.store.AppendToStream(ctx, fmt.Sprintf("bench%d-%d", run, w), events.Any, events.EventData{Type: "Probe", Data: payload})
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	convs := make([]string, writers)
	for w := range convs {
		if convs[w], err = b.stack.svc.OpenDirect(ctx, fmt.Sprintf("l%d-a%d", run, w), fmt.Sprintf("l%d-b%d", run, w)); err != nil {
			return 0, 0, err
		}
	}
	actorRate, err = rate(func(w, n int) error {
		_, err := b.stack.svc.Send(ctx, actors.SendRequest{Conversation: convs[w], Sender: fmt.Sprintf("l%d-a%d", run, w), ClientMsgID: fmt.Sprint(n), Body: benchBody})
		return err
	})
	return storeRate, actorRate, err
}

// result of one scenario.
type result struct {
	name           string
	sends          int
	elapsed        time.Duration
	ack, push      []time.Duration // push: one per message that reached a receiving device
	devices, users int
	due            int // deliveries the sends call for (each message to each receiving device)
}

// benchReport is what one bench run measured.
type benchReport struct {
	echo, store, grains float64 // rates; 0 when not measured
	results             []result
}

// benchReported, if set (tests), receives the report of each run.
var benchReported func(benchReport)

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

func (r result) print(out io.Writer, echo float64) {
	rate := float64(r.sends) / r.elapsed.Seconds()
	fmt.Fprintf(out, "%s: %d users, %d devices online: %.0f msg/s durable", r.name, r.users, r.devices, rate)
	if echo > 0 {
		fmt.Fprintf(out, " = %.0f%% of the bare echo rate", 100*rate/echo)
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "  send→ack   p50 %-8s p99 %-8s max %s\n", pct(r.ack, .5).Round(10*time.Microsecond), pct(r.ack, .99).Round(10*time.Microsecond), pct(r.ack, 1).Round(10*time.Microsecond))
	fmt.Fprintf(out, "  send→push  p50 %-8s p99 %-8s max %s (%d pushes of %d due)\n", pct(r.push, .5).Round(10*time.Microsecond), pct(r.push, .99).Round(10*time.Microsecond), pct(r.push, 1).Round(10*time.Microsecond), len(r.push), r.due)
}

// scenario "direct": senders[i] writes to receivers[i]; "group": members
// of one group, the first `senders` of them sending. Every receiving device
// is connected and timestamps what it gets; the message text carries the
// send time's key.
func (b *bench) scenario(ctx context.Context, name string, users, senders int) (result, error) {
	run := b.seq.Add(1)
	r := result{name: name, users: users}
	prefix := fmt.Sprintf("b%d%s", run, name[:1])
	var sentAt sync.Map // client msg id → time.Time
	var mu sync.Mutex
	var receivers []*client.Client
	defer func() {
		for _, c := range receivers {
			c.Close()
		}
	}()
	member := func(i int) string { return fmt.Sprintf("%s-u%d", prefix, i) }
	group := ""
	if name == "group" {
		creator, err := b.dial(ctx, member(0), "d", true)
		if err != nil {
			return r, err
		}
		var ms []string
		for i := 1; i < users; i++ {
			ms = append(ms, member(i))
		}
		group, err = creator.CreateGroup(ctx, prefix+"-g", "bench", ms)
		creator.Close()
		if err != nil {
			return r, err
		}
	}
	// Receivers: in "direct", user i+senders receives from user i.
	recvUsers := []string{}
	if name == "direct" {
		for i := range senders {
			recvUsers = append(recvUsers, member(senders+i))
		}
		r.users = 2 * senders
	} else {
		for i := range users {
			recvUsers = append(recvUsers, member(i))
		}
	}
	var wg sync.WaitGroup
	for _, u := range recvUsers {
		c, err := b.dial(ctx, u, "d", true)
		if err != nil {
			return r, err
		}
		receivers = append(receivers, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range c.Entries() {
				if p, ok := e.Message.(*eventspb.MessagePointer); ok && p.Message != nil {
					if t0, ok := sentAt.Load(p.Message.ClientMsgId); ok {
						d := time.Since(t0.(time.Time))
						mu.Lock()
						r.push = append(r.push, d)
						mu.Unlock()
					}
				}
			}
		}()
	}
	r.devices = len(receivers)
	var sent atomic.Int64
	deadline := time.Now().Add(b.duration)
	var swg sync.WaitGroup
	errc := make(chan error, senders)
	start := time.Now()
	stopBar := b.progress(&sent, start, deadline)
	for i := range senders {
		swg.Add(1)
		go func() {
			defer swg.Done()
			c, err := b.dial(ctx, member(i), "s", true)
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			to, conv := "", group
			if name == "direct" {
				to = member(senders + i)
			}
			var acks []time.Duration
			for n := 0; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
				cid := fmt.Sprintf("%s-%d-%d", prefix, i, n)
				t0 := time.Now()
				sentAt.Store(cid, t0)
				if _, err := c.Send(ctx, client.Message{To: to, Conversation: conv, ClientMsgID: cid, Body: benchBody}); err != nil {
					errc <- err
					return
				}
				acks = append(acks, time.Since(t0))
				sent.Add(1)
			}
			mu.Lock()
			r.ack = append(r.ack, acks...)
			mu.Unlock()
		}()
	}
	swg.Wait()
	r.elapsed = time.Since(start)
	stopBar()
	r.sends = int(sent.Load())
	select {
	case err := <-errc:
		return result{}, err // receivers are still writing r: do not copy it
	default:
	}
	// Every message goes to each receiving device (in a group, the
	// sender's own receiving device too): wait, within reason, for the last
	// pushes to land.
	r.due = r.sends
	if name == "group" {
		r.due = r.sends * len(receivers)
	}
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end) && ctx.Err() == nil; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := len(r.push)
		mu.Unlock()
		if n >= r.due {
			break
		}
	}
	for _, c := range receivers {
		c.Close() // ends each receiver's Entries loop
	}
	wg.Wait() // no receiver touches r.push after this
	return r, nil
}

var benchBody = []byte(strings.Repeat("x", 100))

// progress draws a bar on stderr until stopped.
func (b *bench) progress(n *atomic.Int64, start, end time.Time) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(os.Stderr, "\r\033[K")
				return
			case <-t.C:
				frac := min(1, time.Since(start).Seconds()/end.Sub(start).Seconds())
				bar := strings.Repeat("=", int(frac*30)) + strings.Repeat(" ", 30-int(frac*30))
				fmt.Fprintf(os.Stderr, "\r[%s] %3.0f%% %8.0f msg/s", bar, frac*100, float64(n.Load())/time.Since(start).Seconds())
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// echo measures bare quic-go: round trips of 200-byte frames over
// long-lived streams, one per client goroutine, against an echo server in
// this process — the ceiling of any request/response protocol here.
func (b *bench) echo(ctx context.Context, streams int) (float64, error) {
	ln, err := quic.ListenAddr("127.0.0.1:0", echoTLS(), transport.QUICConfig(time.Minute))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	go func() {
		for {
			qc, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				for {
					st, err := qc.AcceptStream(context.Background())
					if err != nil {
						return
					}
					go io.Copy(st, st)
				}
			}()
		}
	}()
	conns := make([]*quic.Conn, max(1, streams/8))
	for i := range conns {
		if conns[i], err = quic.DialAddr(ctx, ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"echo"}}, transport.QUICConfig(time.Minute)); err != nil {
			return 0, err
		}
		defer conns[i].CloseWithError(0, "")
	}
	return rateOf(streams, min(b.duration, 3*time.Second), func(w int) (func(int) error, error) {
		st, err := conns[w%len(conns)].OpenStreamSync(ctx)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, 200)
		return func(int) error {
			if _, err := st.Write(buf); err != nil {
				return err
			}
			_, err := io.ReadFull(st, buf)
			return err
		}, nil
	})
}

// rateOf runs `workers` goroutines for d, each repeating the operation
// that setup gives it, and returns operations per second (or the first
// error).
func rateOf(workers int, d time.Duration, setup func(w int) (func(n int) error, error)) (float64, error) {
	var total atomic.Int64
	var failed atomic.Value
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op, err := setup(w)
			if err != nil {
				failed.Store(err)
				return
			}
			for n := 0; time.Now().Before(deadline); n++ {
				if err := op(n); err != nil {
					failed.Store(err)
					return
				}
				total.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		return 0, err
	}
	return float64(total.Load()) / time.Since(start).Seconds(), nil
}

func echoTLS() *tls.Config {
	dir, _ := os.MkdirTemp("", "imsync-echo-")
	defer os.RemoveAll(dir)
	cert, _ := transport.LoadOrCreateCert(dir)
	return &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"echo"}}
}

// idleMemory measures what n idle connected devices cost the server: the
// devices run in a child process (this binary, `bench-clients`), so the
// heap and stacks counted here are the server's alone. The baseline is the
// same with bare quic-go connections to a bare listener.
func (b *bench) idleMemory(ctx context.Context, n int) error {
	bare, err := b.bareIdle(ctx, n)
	if err != nil {
		return err
	}
	if b.dataDir == "" {
		return errors.New("bench: the idle measurement needs the server's data directory")
	}
	before := heap()
	stop, err := spawnClients(ctx, "--server", b.addr, "--data", b.dataDir, "--n", fmt.Sprint(n))
	if err != nil {
		return err
	}
	time.Sleep(time.Second)
	after := heap()
	stop()
	per := float64(after-before) / float64(n)
	fmt.Fprintf(b.out, "idle devices: %d connected cost the server %.1f KB each (heap and stacks) vs %.1f KB for a bare quic-go connection: %.1f KB beyond\n",
		n, per/1024, bare/1024, (per-bare)/1024)
	return nil
}

func (b *bench) bareIdle(ctx context.Context, n int) (float64, error) {
	ln, err := quic.ListenAddr("127.0.0.1:0", echoTLS(), transport.QUICConfig(time.Minute))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	var held []*quic.Conn
	var hmu sync.Mutex
	go func() {
		for {
			qc, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			hmu.Lock()
			held = append(held, qc)
			hmu.Unlock()
		}
	}()
	before := heap()
	stop, err := spawnClients(ctx, "--server", ln.Addr().String(), "--bare", "--n", fmt.Sprint(n))
	if err != nil {
		return 0, err
	}
	time.Sleep(time.Second)
	after := heap()
	stop()
	return float64(after-before) / float64(n), nil
}

// spawnClients starts `imsync bench-clients` and waits until it says its
// connections are up; stop ends it.
func spawnClients(ctx context.Context, args ...string) (stop func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, append([]string{"bench-clients"}, args...)...)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("bench-clients: %q", line)
	}
	return func() { in.Close(); cmd.Wait() }, nil
}

// runBenchClients is the child of the idle measurement: it connects n
// devices (or bare QUIC connections), says "ready" and waits for stdin to
// close.
func runBenchClients(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("bench-clients", flag.ContinueOnError)
	server := fs.String("server", "", "")
	data := fs.String("data", "", "")
	n := fs.Int("n", 100, "")
	bare := fs.Bool("bare", false, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	if *bare {
		for range *n {
			qc, err := quic.DialAddr(ctx, *server, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"echo"}}, transport.QUICConfig(time.Minute))
			if err != nil {
				return err
			}
			closers = append(closers, func() { qc.CloseWithError(0, "") })
		}
	} else {
		b := &bench{}
		if err := b.useServer(*server, *data); err != nil {
			return err
		}
		for i := range *n {
			c, err := b.dial(ctx, fmt.Sprintf("idle%d", i), "d", true)
			if err != nil {
				return err
			}
			closers = append(closers, func() { c.Close() })
		}
	}
	fmt.Fprintln(out, "ready")
	io.Copy(io.Discard, os.Stdin)
	return nil
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}
