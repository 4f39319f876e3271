package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
)

// serveInProcess runs `imsync serve` in this process with args (serve's
// own among them) until the test ends and returns its address, its output
// so far and onwards, and a stop that ends it and returns what serve did.
func serveInProcess(t *testing.T, args ...string) (string, *syncBuffer, func() error) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	out := &syncBuffer{}
	served := make(chan error, 1)
	go func() { served <- run(ctx, args, out) }()
	t.Cleanup(stop)
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if m := regexp.MustCompile(`listening on (\S+)`).FindStringSubmatch(out.String()); m != nil {
			return m[1], out, func() error { stop(); return <-served }
		}
		select {
		case err := <-served:
			t.Fatalf("serve: %v", err)
		default:
		}
		if time.Now().After(end) {
			t.Fatalf("server did not start: %q", out.String())
		}
	}
}

// serveChildEnv carries the arguments of `imsync` (serve and its flags),
// separated by \x1f, to a child test binary running TestServeChild.
const serveChildEnv = "IMSYNC_SERVE_CHILD_ARGS"

// serveChildDrainEnv, when set, makes the child's SIGTERM drain and exit
// 0, as in production; otherwise SIGTERM ends the process at once.
const serveChildDrainEnv = "IMSYNC_SERVE_CHILD_DRAIN"

// TestServeChild is the server process that startServe starts.
func TestServeChild(t *testing.T) {
	args := os.Getenv(serveChildEnv)
	if args == "" {
		t.Skip("only runs as a server process started by a test")
	}
	ctx := context.Background()
	if os.Getenv(serveChildDrainEnv) != "" {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	if err := run(ctx, strings.Split(args, "\x1f"), os.Stdout); err != nil {
		fmt.Println("serve:", err)
		os.Exit(2)
	}
}

// serveChildCmd is `imsync args...` as a TestServeChild process.
func serveChildCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestServeChild$")
	cmd.Env = append(os.Environ(), serveChildEnv+"="+strings.Join(args, "\x1f"))
	return cmd
}

// serveChild is `imsync serve` running in a child process.
type serveChild struct {
	cmd  *exec.Cmd
	addr string // QUIC
	api  string // the server API's URL, with --api
	ops  string // http://HOST:PORT, with --ops
}

// serveOptions are how a child's process differs from the default one.
type serveOptions struct {
	drain  bool      // SIGTERM drains and exits 0
	stderr io.Writer // nil: the test binary's own
}

var (
	listeningRE = regexp.MustCompile(`imsync listening on (\S+)`)
	apiRE       = regexp.MustCompile(`server API on (\S+)`)
	opsRE       = regexp.MustCompile(`operations on (http://\S+)/metrics`)
)

// startServe runs `imsync serve --data DATA ARGS` in a child process on
// data's store and returns it once it listens (serve prints the API and
// operations addresses before). The child is killed when the test ends.
func startServe(t *testing.T, data string, opt serveOptions, args ...string) *serveChild {
	t.Helper()
	cmd := serveChildCmd(t, append([]string{"serve", "--data", data}, args...)...)
	cmd.Env = append(cmd.Env, storeEnv(t, data)...)
	if opt.drain {
		cmd.Env = append(cmd.Env, serveChildDrainEnv+"=1")
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if opt.stderr != nil {
		cmd.Stderr = opt.stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Whatever way the test ends, the child ends with it (Kill or Wait of
	// one that has ended already is a harmless error).
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ch := &serveChild{cmd: cmd}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if m := apiRE.FindStringSubmatch(sc.Text()); m != nil {
			ch.api = m[1]
		}
		if m := opsRE.FindStringSubmatch(sc.Text()); m != nil {
			ch.ops = m[1]
		}
		if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
			ch.addr = m[1]
			go io.Copy(io.Discard, out)
			return ch
		}
	}
	t.Fatal("server child did not start")
	return nil
}

// pinnedTLSOf is the TLS config that trusts the certificate of the server
// on data (DATA/server.crt).
func pinnedTLSOf(t *testing.T, data string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(data, transport.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := client.PinnedTLS(pem)
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// dialServe connects user's device to the server at addr on data, with a
// token from key, from the sync position last and without reconnecting;
// the test fails if it cannot within 20s.
func dialServe(t *testing.T, data, addr string, key *transport.Key, user, device string, last uint64) *client.Client {
	t.Helper()
	tok, err := key.Mint(user, device, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tlsConf := pinnedTLSOf(t, data)
	var c *client.Client
	err = withTimeout(20*time.Second, func(ctx context.Context) (err error) {
		c, err = client.Dial(ctx, client.Config{Addr: addr, Token: tok, TLS: tlsConf, NoReconnect: true, LastUserSeq: last})
		return err
	})
	if err != nil {
		t.Fatalf("dial %s/%s: %v", user, device, err)
	}
	return c
}
