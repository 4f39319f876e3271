package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	reqs := []*Request{
		{Id: 1, Op: &Request_Send{Send: &Send{Conversation: "c", ClientMsgId: "m1", Body: []byte("hi")}}},
		{Id: 2, Op: &Request_Sync{Sync: &SyncPull{AfterUserSeq: 5, Limit: 10}}},
		{Id: 3},
	}
	for _, r := range reqs {
		if err := WriteFrame(&buf, r); err != nil {
			t.Fatal(err)
		}
	}
	rd := NewReader(&buf, 0)
	for _, want := range reqs {
		var got Request
		if err := rd.Read(&got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, want) {
			t.Fatalf("got %v, want %v", &got, want)
		}
	}
	var end Request
	if err := rd.Read(&end); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestFrameErrors(t *testing.T) {
	good, _ := AppendFrame(nil, &Request{Id: 7, Op: &Request_Send{Send: &Send{Body: []byte("hello")}}})
	cases := []struct {
		name string
		in   []byte
		max  int
		want error
	}{
		{"oversize", append([]byte{0xff, 0xff, 0x3f}, make([]byte, 10)...), 1024, ErrFrameTooLarge},
		{"truncated body", good[:len(good)-2], 0, io.ErrUnexpectedEOF},
		{"truncated length", []byte{0x80}, 0, io.ErrUnexpectedEOF},
		{"length overflows", bytes.Repeat([]byte{0xff}, 11), 0, ErrBadFrame},
		{"not protobuf", []byte{3, 0xff, 0xff, 0xff}, 0, ErrBadFrame},
	}
	for _, tc := range cases {
		var r Request
		err := NewReader(bytes.NewReader(tc.in), tc.max).Read(&r)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

// FuzzReadFrame: whatever the bytes, reading frames never panics, never
// allocates past the limit, and anything decoded re-encodes to itself.
func FuzzReadFrame(f *testing.F) {
	seed, _ := AppendFrame(nil, &Request{Id: 1, Op: &Request_Send{Send: &Send{Conversation: "c", Body: []byte("x")}}})
	f.Add(seed)
	hello, _ := AppendFrame(nil, &Hello{Token: "t", LastUserSeq: 3})
	f.Add(hello)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		rd := NewReader(bytes.NewReader(in), 4096)
		for range 16 {
			var r Request
			err := rd.Read(&r)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrBadFrame) && !errors.Is(err, ErrFrameTooLarge) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			b, err := AppendFrame(nil, &r)
			if err != nil {
				t.Fatal(err)
			}
			var again Request
			if err := NewReader(bytes.NewReader(b), 0).Read(&again); err != nil || !proto.Equal(&r, &again) {
				t.Fatalf("re-encoded frame does not decode to itself: %v", err)
			}
		}
	})
}
