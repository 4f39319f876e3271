package transport

// Preauth is how many connections hold a pre-login slot.
func (s *Server) Preauth() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.preauth
}

// MintV1 makes a token in the HMAC format of earlier releases.
var MintV1 = mintV1
