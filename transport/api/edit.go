package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/imsync/imsync/transport/wire"
)

// EditRequest is the body of PATCH /v1/conversations/{conversation}/messages/{seq}:
// actor (the message's sender, or a group admin, within the edit window)
// gives the message a new body, as text or as body (base64).
type EditRequest struct {
	Actor string `json:"actor"`
	Text  string `json:"text,omitempty"`
	Body  []byte `json:"body,omitempty"`
}

// RecallRequest is the body of POST /v1/conversations/{conversation}/messages/{seq}/recall:
// actor (the message's sender, or a group admin, within the recall window)
// recalls it.
type RecallRequest struct {
	Actor string `json:"actor"`
}

// seqParam is the {seq} of the path: a message's seq.
func seqParam(r *http.Request) (uint64, error) {
	s := r.PathValue("seq")
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, invalid("message seq %q: want a positive integer", s)
	}
	return n, nil
}

func (a *API) edit(ctx context.Context, r *http.Request) (any, error) {
	seq, err := seqParam(r)
	if err != nil {
		return nil, err
	}
	var q EditRequest
	if err := decode(r, &q); err != nil {
		return nil, err
	}
	if q.Actor == "" {
		return nil, invalid("an edit needs actor (the sender, or a group admin)")
	}
	if (q.Text == "") == (q.Body == nil) {
		return nil, invalid("an edit has text or body (base64): one of them")
	}
	body := q.Body
	if body == nil {
		body = []byte(q.Text)
	}
	at, err := a.cfg.Service.Edit(ctx, q.Actor, r.PathValue("conversation"), seq, body)
	if err != nil {
		return nil, err
	}
	return Done{Seq: at}, nil
}

func (a *API) recall(ctx context.Context, r *http.Request) (any, error) {
	seq, err := seqParam(r)
	if err != nil {
		return nil, err
	}
	var q RecallRequest
	if err := decode(r, &q); err != nil {
		return nil, err
	}
	if q.Actor == "" {
		return nil, invalid("a recall needs actor (the sender, or a group admin)")
	}
	at, err := a.cfg.Service.Recall(ctx, q.Actor, r.PathValue("conversation"), seq)
	if err != nil {
		return nil, err
	}
	return Done{Seq: at}, nil
}

// probedMethods are the methods tried to say which a path allows.
var probedMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// allowed lists the methods the API answers on r's path (HEAD with GET,
// as the mux serves it), for the Allow header of a 405.
func (a *API) allowed(r *http.Request) []string {
	var out []string
	for _, m := range probedMethods {
		probe := *r
		probe.Method = m
		if _, pattern := a.mux.Handler(&probe); pattern != "" {
			out = append(out, m)
		}
	}
	return out
}

// methodNotAllowed answers a known path asked with a method it does not
// serve: 405, with the methods it does in Allow (RFC 9110, 15.5.6).
func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow []string) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeJSON(w, http.StatusMethodNotAllowed, Error{
		Code:  wire.CodeUnknown,
		Error: fmt.Sprintf("%s is not allowed on %s: use %s", r.Method, r.URL.Path, strings.Join(slices.DeleteFunc(slices.Clone(allow), func(m string) bool { return m == http.MethodHead }), " or ")),
	})
}
