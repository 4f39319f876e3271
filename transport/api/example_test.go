package api_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/transport/api"
)

func Example() {
	store, _ := events.OpenInMemory(events.Options{})
	defer store.Close()
	svc, _ := actors.Start(actors.Config{Store: store})
	defer svc.Close()
	a, err := api.New(api.Config{Service: svc, Key: []byte("an API key of 16+ bytes")})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(a) // or http.ListenAndServe(addr, a)
	defer srv.Close()

	res, _ := http.Get(srv.URL + "/v1/users/ann/conversations") // no key
	fmt.Println(res.Status)
	res.Body.Close()
	// Output: 401 Unauthorized
}
