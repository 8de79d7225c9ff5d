// A tiny CNI runtime built on the reference library (libcni from Debian's
// golang-github-appc-cni-dev), so the tests can check that libcni itself
// accepts what twill-cni prints. One operation per run; the request is JSON
// on stdin:
//
//	{"op": "validate"|"add"|"check"|"del"|"cached",
//	 "conf": "/path/x.conflist" (or a single .conf),
//	 "containerId": "...", "netns": "/var/run/netns/...", "ifname": "eth0",
//	 "path": ["/dir/with/plugins", ...], "cacheDir": "/tmp/...",
//	 "args": [["K8S_POD_NAME", "x"], ...], "capabilityArgs": {...}}
//
// On success it prints {"result": <the result as libcni parsed it, in the
// list's version>, "current": <the same converted to 1.0.0>, "capabilities": [...]}
// and exits 0; on failure it prints the error on stderr ("code N: msg" when the
// plugin returned a CNI error) and exits 1.
//
// Build (offline): GO111MODULE=off GOPATH=<dir>:/usr/share/gocode go build
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

type request struct {
	Op             string                 `json:"op"`
	Conf           string                 `json:"conf"`
	ContainerID    string                 `json:"containerId"`
	NetNS          string                 `json:"netns"`
	IfName         string                 `json:"ifname"`
	Path           []string               `json:"path"`
	CacheDir       string                 `json:"cacheDir"`
	Args           [][2]string            `json:"args"`
	CapabilityArgs map[string]interface{} `json:"capabilityArgs"`
}

type reply struct {
	Result       json.RawMessage `json:"result,omitempty"`
	Current      json.RawMessage `json:"current,omitempty"`
	Capabilities []string        `json:"capabilities,omitempty"`
	CNIVersion   string          `json:"cniVersion"`
}

func loadList(file string) (*libcni.NetworkConfigList, error) {
	if strings.HasSuffix(file, ".conflist") {
		return libcni.ConfListFromFile(file)
	}
	c, err := libcni.ConfFromFile(file)
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromConf(c)
}

// encode re-marshals a result libcni parsed, and its conversion to 1.0.0: both
// steps fail if the plugin's output does not fit the spec's types.
func encode(r types.Result, out *reply) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("marshal result: %w", err)
	}
	out.Result = b
	cur, err := types100.GetResult(r)
	if err != nil {
		return fmt.Errorf("convert result to 1.0.0: %w", err)
	}
	if b, err = json.Marshal(cur); err != nil {
		return fmt.Errorf("marshal converted result: %w", err)
	}
	out.Current = b
	return nil
}

func run(req request) (*reply, error) {
	list, err := loadList(req.Conf)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", req.Conf, err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(req.Path, req.CacheDir, nil)
	rt := &libcni.RuntimeConf{
		ContainerID:    req.ContainerID,
		NetNS:          req.NetNS,
		IfName:         req.IfName,
		Args:           req.Args,
		CapabilityArgs: req.CapabilityArgs,
	}
	if rt.IfName == "" {
		rt.IfName = "eth0"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := &reply{CNIVersion: list.CNIVersion}
	switch req.Op {
	case "validate":
		caps, err := cni.ValidateNetworkList(ctx, list)
		if err != nil {
			return nil, err
		}
		out.Capabilities = caps
		if out.Capabilities == nil {
			out.Capabilities = []string{}
		}
	case "add":
		r, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return nil, err
		}
		if err := encode(r, out); err != nil {
			return nil, err
		}
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			return nil, err
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			return nil, err
		}
	case "cached":
		r, err := cni.GetNetworkListCachedResult(list, rt)
		if err != nil {
			return nil, err
		}
		if r != nil {
			if err := encode(r, out); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("unknown op %q", req.Op)
	}
	return out, nil
}

func main() {
	in, err := io.ReadAll(os.Stdin)
	if err == nil {
		var req request
		if err = json.Unmarshal(in, &req); err == nil {
			var out *reply
			if out, err = run(req); err == nil {
				b, _ := json.Marshal(out)
				fmt.Println(string(b))
				return
			}
		}
	}
	var ce *types.Error
	if errors.As(err, &ce) {
		fmt.Fprintf(os.Stderr, "code %d: %s\n", ce.Code, err.Error())
	} else {
		fmt.Fprintln(os.Stderr, err.Error())
	}
	os.Exit(1)
}
