// Command redis measures Redis with one replica the way users replicate
// sessions with it: each client sends SET of its own key with a fixed
// payload followed by WAIT 1 0 (block until one replica acknowledged), in
// one write, and waits for both answers. It speaks RESP directly over
// TCP, one connection per client.
//
//	go run ./bench/redis -addr 127.0.0.1:7379 -clients 64 -size 1024 -duration 10s
//
// run.sh starts a primary and a replica and runs this next to Troupe's
// benchsave.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupe-go/troupe/internal/benchnet"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:7379", "the Redis primary")
	clients := flag.Int("clients", 64, "concurrent clients, one key and one connection each")
	size := flag.Int("size", 1024, "payload bytes per SET")
	duration := flag.Duration("duration", 5*time.Second, "how long to run")
	quiet := flag.Bool("quiet", false, "print only the ops/s number")
	flag.Parse()

	conns := make([]*client, *clients)
	for i := range conns {
		c, err := dial(*addr)
		if err != nil {
			log.Fatal(err)
		}
		defer c.conn.Close()
		conns[i] = c
	}
	// The replica must be attached, or WAIT 1 0 blocks forever.
	if n, err := conns[0].setWait("troupe-bench-probe", make([]byte, *size)); err != nil || n < 1 {
		log.Fatalf("SET+WAIT probe: %d replicas acknowledged, err %v", n, err)
	}

	var ops atomic.Int64
	lats := make([][]time.Duration, *clients)
	var wg sync.WaitGroup
	end := time.Now().Add(*duration)
	start := time.Now()
	for i, c := range conns {
		wg.Go(func() {
			key := "troupe-bench-" + strconv.Itoa(i)
			payload := make([]byte, *size)
			for j := 0; time.Now().Before(end); j++ {
				payload[0] = byte(j)
				t0 := time.Now()
				n, err := c.setWait(key, payload)
				if err != nil {
					log.Fatal(err)
				}
				if n < 1 {
					log.Fatalf("WAIT returned %d replicas", n)
				}
				lats[i] = append(lats[i], time.Since(t0))
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	rate := float64(ops.Load()) / time.Since(start).Seconds()
	if *quiet {
		fmt.Printf("%.0f\n", rate)
		return
	}
	all := slices.Concat(lats...)
	fmt.Printf("redis  SET %d B + WAIT 1 0, %d clients                p50 %6.1f µs  p99 %6.1f µs  %8.0f ops/s\n",
		*size, *clients, benchnet.Micros(benchnet.Percentile(all, 50)), benchnet.Micros(benchnet.Percentile(all, 99)), rate)
}

type client struct {
	conn net.Conn
	r    *bufio.Reader
	buf  []byte
}

func dial(addr string) (*client, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &client{conn: c, r: bufio.NewReader(c)}, nil
}

// setWait sends SET key payload and WAIT 1 0 in one write and returns
// how many replicas WAIT reported.
func (c *client) setWait(key string, payload []byte) (int, error) {
	b := c.buf[:0]
	b = appendCommand(b, []byte("SET"), []byte(key), payload)
	b = appendCommand(b, []byte("WAIT"), []byte("1"), []byte("0"))
	c.buf = b
	if _, err := c.conn.Write(b); err != nil {
		return 0, err
	}
	line, err := c.line()
	if err != nil {
		return 0, err
	}
	if line != "+OK" {
		return 0, fmt.Errorf("SET: %q", line)
	}
	line, err = c.line()
	if err != nil {
		return 0, err
	}
	if len(line) < 2 || line[0] != ':' {
		return 0, fmt.Errorf("WAIT: %q", line)
	}
	return strconv.Atoi(line[1:])
}

func (c *client) line() (string, error) {
	s, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if len(s) < 2 || s[len(s)-2] != '\r' {
		return "", io.ErrUnexpectedEOF
	}
	return s[:len(s)-2], nil
}

func appendCommand(b []byte, args ...[]byte) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, '\r', '\n')
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	return b
}
