package events

// What a backend outside this package needs to see of the option types,
// whose fields are unexported so that only the constructors make them.

// ExpectKind says which condition an ExpectedRevision is.
type ExpectKind uint8

const (
	ExpectInvalid      = ExpectKind(expectInvalid)
	ExpectAny          = ExpectKind(expectAny)
	ExpectNoStream     = ExpectKind(expectNoStream)
	ExpectStreamExists = ExpectKind(expectStreamExists)
	ExpectExact        = ExpectKind(expectExact) // the revision is e.Revision()
)

// Kind returns which condition e is.
func (e ExpectedRevision) Kind() ExpectKind { return ExpectKind(e.kind) }

// StartKind says where a subscription starts.
type StartKind uint8

const (
	StartAtStart       = StartKind(fromStart)
	StartAtEnd         = StartKind(fromEnd)
	StartAfterRevision = StartKind(fromAfterRevision)
	StartAfterPosition = StartKind(fromAfterPosition)
)

// Start returns where f starts: its kind, and the revision or position it
// names (for StartAfterRevision and StartAfterPosition).
func (f SubscribeFrom) Start() (StartKind, Revision, Position) {
	return StartKind(f.kind), f.rev, f.pos
}

// ValidateRead checks the page size and direction of a read.
func ValidateRead(limit int, d Direction) error {
	if err := validateLimit(limit); err != nil {
		return err
	}
	return validateDirection(d)
}

// ValidateMetadata checks stream metadata before it is set.
func ValidateMetadata(m StreamMetadata) error { return validateMetadata(m) }

// ValidateExpected checks an expectation before a write.
func ValidateExpected(e ExpectedRevision) error { return validateExpected(e) }
