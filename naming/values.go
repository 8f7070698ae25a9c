package naming

import (
	"context"
	"fmt"

	"github.com/troupe-go/troupe/internal/wire"
)

// BindValue encodes v with msgpack and binds it (see Tree.Bind).
func BindValue[T any](ctx context.Context, t *Tree, name string, v T, opts ...BindOption) error {
	b, err := wire.Marshal(v)
	if err != nil {
		return fmt.Errorf("naming: encode value of %q: %w", name, err)
	}
	return t.Bind(ctx, name, b, opts...)
}

// RebindValue encodes v with msgpack and rebinds it (see Tree.Rebind).
func RebindValue[T any](ctx context.Context, t *Tree, name string, v T, opts ...BindOption) error {
	b, err := wire.Marshal(v)
	if err != nil {
		return fmt.Errorf("naming: encode value of %q: %w", name, err)
	}
	return t.Rebind(ctx, name, b, opts...)
}

// LookupValue looks name up and decodes its value into a T. For a
// clusterable name it decodes the first offer; use Select and DecodeValue
// to choose one.
func LookupValue[T any](t *Tree, name string) (T, error) {
	var v T
	b, err := t.Lookup(name)
	if err != nil {
		return v, err
	}
	return DecodeValue[T](b.Offers[0])
}

// DecodeValue decodes an offer's value, bound with BindValue, into a T.
func DecodeValue[T any](o Offer) (T, error) {
	var v T
	if err := wire.Unmarshal(o.Value, &v); err != nil {
		return v, fmt.Errorf("%w: offer of %s as %T: %v", ErrDecode, o.Node, v, err)
	}
	return v, nil
}
