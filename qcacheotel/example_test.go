package qcacheotel_test

import (
	"context"
	"fmt"

	"github.com/qcache-go/qcache"
	"github.com/qcache-go/qcache/qcacheotel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// The span of a fetch is a child of the span of the call that started it.
// A service passes no provider (the global ones serve) and exports its
// spans; the example records them, and prints them.
func Example() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	tel, err := qcacheotel.New(qcacheotel.WithTracerProvider(tp))
	if err != nil {
		panic(err)
	}
	defer tel.Close()
	client := qcache.NewClient(qcache.WithHooks(tel.Hooks()))
	tel.Watch(client)

	users := qcache.NewQueryFunc(client, qcache.Key{"users"}, func(ctx context.Context, id int) (string, error) {
		return fmt.Sprint("user ", id), nil
	})
	ctx, request := tp.Tracer("app").Start(context.Background(), "GET /profile")
	users.Get(ctx, 42)
	request.End()
	client.Close() // waits for the fetch to end, and its span with it

	names := map[string]string{}
	for _, s := range spans.Ended() {
		names[s.SpanContext().SpanID().String()] = s.Name()
	}
	for _, s := range spans.Ended() {
		if s.Parent().IsValid() {
			attrs := map[string]string{}
			for _, kv := range s.Attributes() {
				attrs[string(kv.Key)] = kv.Value.Emit()
			}
			fmt.Printf("%s, child of %s: key %s, %s after %s attempt\n", s.Name(), names[s.Parent().SpanID().String()],
				attrs["qcache.key"], attrs["qcache.outcome"], attrs["qcache.attempts"])
		}
	}
	// Output:
	// qcache.fetch users, child of GET /profile: key users/42, success after 1 attempt
}
