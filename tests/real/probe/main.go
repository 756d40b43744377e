// Command probe is the test image of the tests/real tier (built with CGO_ENABLED=0 and packed
// `buildah from scratch` by the conftest: no shell, no libc).
//
//	probe serve PORT   print the ELASTICDF_* environment, then answer HTTP GET with the pod's hostname
//	probe env          print the ELASTICDF_* environment (for exec)
//	probe get URL      GET the URL (retrying up to 30 s: cluster DNS may still start) and print the body
//
// It exits at once on SIGTERM, so pods stop without waiting for their grace period.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

func printEnv() {
	var lines []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ELASTICDF_") {
			lines = append(lines, kv)
		}
	}
	sort.Strings(lines)
	fmt.Println(strings.Join(lines, "\n"))
}

func serve(port string) error {
	printEnv()
	hostname, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, "hello from %s\n", hostname) })
	return http.ListenAndServe(":"+port, nil)
}

func get(url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			body, readErr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if readErr == nil && resp.StatusCode == http.StatusOK {
				fmt.Print(string(body))
				return nil
			}
			err = fmt.Errorf("status %d, %v", resp.StatusCode, readErr)
		}
		if time.Now().After(deadline) {
			return err
		}
		fmt.Fprintln(os.Stderr, "retrying:", err)
		time.Sleep(time.Second)
	}
}

func main() {
	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
		<-signals
		os.Exit(0)
	}()
	var err error
	switch {
	case len(os.Args) == 3 && os.Args[1] == "serve":
		err = serve(os.Args[2])
	case len(os.Args) == 2 && os.Args[1] == "env":
		printEnv()
	case len(os.Args) == 3 && os.Args[1] == "get":
		err = get(os.Args[2])
	default:
		err = fmt.Errorf("usage: probe serve PORT | env | get URL")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}
