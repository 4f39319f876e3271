package main

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/imsync/imsync/transport/wire"
)

var protocolDoc = filepath.Join("..", "..", "docs", "protocol.md")

// TestProtocolVectors: every test vector of docs/protocol.md encodes to
// its frame, and the frame decodes to the message.
func TestProtocolVectors(t *testing.T) {
	doc, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile("(?m)^\\| `(imsync\\.[A-Za-z0-9_.]+)` \\| `(.+)` \\| `([0-9a-f]+)` \\|$").FindAllStringSubmatch(string(doc), -1)
	if len(rows) < 8 {
		t.Fatalf("docs/protocol.md has %d test vectors", len(rows))
	}
	for _, r := range rows {
		name, text, frameHex := r[1], r[2], r[3]
		mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		m := mt.New().Interface()
		if err := prototext.Unmarshal([]byte(text), m); err != nil {
			t.Fatalf("%s %s: %v", name, text, err)
		}
		var b bytes.Buffer
		if err := wire.WriteFrame(&b, m); err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(b.Bytes()); got != frameHex {
			t.Fatalf("%s %s:\nencodes to %s\nthe doc says %s", name, text, got, frameHex)
		}
		frame, _ := hex.DecodeString(frameHex)
		back := mt.New().Interface()
		if err := wire.NewReader(bytes.NewReader(frame), wire.DefaultMaxFrameSize).Read(back); err != nil || !proto.Equal(back, m) {
			t.Fatalf("%s: the frame decodes to %v (%v)", name, back, err)
		}
	}
}

// TestProtocolEntryTypes: each sync entry type docs/protocol.md lists is
// a message of imsync.events.v1.
func TestProtocolEntryTypes(t *testing.T) {
	doc, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	section, _, _ := strings.Cut(string(doc)[strings.Index(string(doc), "**3. Sync entries.**"):], "**4.")
	types := regexp.MustCompile("(?m)^\\| `([A-Z][A-Za-z]+)` \\| ").FindAllStringSubmatch(section, -1)
	if len(types) != 5 {
		t.Fatalf("docs/protocol.md lists %d entry types", len(types))
	}
	for _, ty := range types {
		if _, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName("imsync.events.v1." + ty[1])); err != nil {
			t.Fatalf("entry type %s: %v", ty[1], err)
		}
	}
}

// TestProtocolProtocCommand runs the protoc command docs/protocol.md gives
// for other languages, from the repository root.
func TestProtocolProtocCommand(t *testing.T) {
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		t.Skip("protoc is not installed")
	}
	var cmd string
	for _, b := range mdBlocks(t, protocolDoc, "## Writing a client in another language", "sh") {
		if strings.Contains(b, "protoc ") {
			cmd = strings.ReplaceAll(strings.TrimSpace(b), "\\\n", " ")
		}
	}
	out := t.TempDir()
	cmd = strings.ReplaceAll(strings.ReplaceAll(cmd, "mkdir -p gen && ", ""), "protoc ", protoc+" ")
	cmd = strings.ReplaceAll(cmd, "--python_out=gen", "--python_out="+out)
	c := exec.Command("sh", "-c", cmd)
	c.Dir = filepath.Join("..", "..")
	if b, err := c.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, b)
	}
	for _, f := range []string{"imsync_wire_pb2.py", "imsync_views_pb2.py", "imsync_events_pb2.py"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Fatalf("protoc made no %s: %v", f, err)
		}
	}
}
