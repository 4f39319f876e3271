// Package api is the HTTP JSON API for the app backend: send as a user or
// as a system or bot sender, create groups and change members, list a
// user's conversations and read history, disconnect a device, revoke a
// user's tokens. docs/openapi.json describes it (served at /openapi.json).
//
// # Usage
//
//	a, err := api.New(api.Config{
//		Service: svc,     // *actors.Service
//		Gateway: gateway, // *transport.Server: disconnect and revoke
//		Key:     key,     // api.LoadKey("/etc/imsync/api.key"): 16 bytes or more
//	})
//	if err != nil { ... }
//	http.ListenAndServe("127.0.0.1:7402", a)
//
// `imsync serve --api ADDR --api-key FILE` does exactly this; it refuses
// to start --api without a key.
//
// Every /v1 call needs "Authorization: Bearer KEY" (compared in constant
// time); without it, or with another key, the answer is 401 with code 102
// and nothing runs. Errors are JSON {"code": N, "error": "..."} with the
// wire protocol's codes (docs/protocol.md) and matching HTTP statuses: 1
// INVALID 400, 2 NOT_FOUND 404, 3 FORBIDDEN 403, 4 CONFLICT 409, 5
// TOO_LARGE 413, 6 EXPIRED 410, 7 UNAVAILABLE 503, 101 UNKNOWN (no such
// endpoint) 404, 102 UNAUTHORIZED 401, 106 INTERNAL 500.
//
// A message sent as a user goes through the same rules as one sent by
// the user's device: the sender must be a member (404 otherwise). With
// "system": true the sender is a system or bot identity that need not be
// a member; members receive the message like any other.
package api
