// cni-agent is the default CNI of the registry-free kind node image: a small DaemonSet
// process that watches the cluster's Nodes and
//   - writes this node's CNI config (ptp + host-local on the node's podCIDR, portmap), and
//   - routes every other node's podCIDR via that node's InternalIP,
//
// so pods reach each other across the nodes of a kind network. Stdlib only.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

type node struct {
	Metadata struct {
		Name            string `json:"name"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Spec struct {
		PodCIDR  string   `json:"podCIDR"`
		PodCIDRs []string `json:"podCIDRs"`
	} `json:"spec"`
	Status struct {
		Addresses []struct {
			Type    string `json:"type"`
			Address string `json:"address"`
		} `json:"addresses"`
	} `json:"status"`
}

type nodeList struct {
	Metadata struct {
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Items []node `json:"items"`
}

type client struct {
	base  string
	token string
	http  *http.Client
}

func newClient() (*client, error) {
	endpoint := os.Getenv("CONTROL_PLANE_ENDPOINT")
	if endpoint == "" {
		endpoint = os.Getenv("KUBERNETES_SERVICE_HOST") + ":" + os.Getenv("KUBERNETES_SERVICE_PORT")
	}
	token, err := os.ReadFile(filepath.Join(saDir, "token"))
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &client{
		base:  "https://" + endpoint,
		token: strings.TrimSpace(string(token)),
		http:  &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
	}, nil
}

func (c *client) get(path string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return resp, nil
}

func (c *client) listNodes() (*nodeList, error) {
	resp, err := c.get("/api/v1/nodes")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var list nodeList
	return &list, json.NewDecoder(resp.Body).Decode(&list)
}

// watchNodes blocks until the watch ends; it returns when any node event arrives.
func (c *client) watchNodes(resourceVersion string) error {
	resp, err := c.get("/api/v1/nodes?watch=1&timeoutSeconds=300&resourceVersion=" + resourceVersion)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	scanner := bufio.NewScanner(resp.Body)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	if scanner.Scan() {
		return nil
	}
	return scanner.Err()
}

func cidrs(n node) []string {
	if len(n.Spec.PodCIDRs) > 0 {
		return n.Spec.PodCIDRs
	}
	if n.Spec.PodCIDR != "" {
		return []string{n.Spec.PodCIDR}
	}
	return nil
}

func internalIPs(n node) []string {
	var ips []string
	for _, a := range n.Status.Addresses {
		if a.Type == "InternalIP" {
			ips = append(ips, a.Address)
		}
	}
	return ips
}

func writeConfig(dir string, podCIDRs []string) error {
	var ranges []interface{}
	for _, c := range podCIDRs {
		ranges = append(ranges, []interface{}{map[string]string{"subnet": c}})
	}
	conf := map[string]interface{}{
		"cniVersion": "0.4.0",
		"name":       "hermetic",
		"plugins": []interface{}{
			map[string]interface{}{
				"type":   "ptp",
				"ipMasq": true,
				"mtu":    1500,
				"ipam": map[string]interface{}{
					"type":   "host-local",
					"ranges": ranges,
					"routes": []interface{}{map[string]string{"dst": "0.0.0.0/0"}},
				},
			},
			map[string]interface{}{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "10-hermetic.conflist")
	if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	log.Printf("writing %s for %v", path, podCIDRs)
	return os.Rename(tmp, path)
}

func reconcile(self string, confDir string, list *nodeList) error {
	for _, n := range list.Items {
		if n.Metadata.Name == self {
			if c := cidrs(n); len(c) > 0 {
				if err := writeConfig(confDir, c); err != nil {
					return err
				}
			}
			continue
		}
		ips := internalIPs(n)
		for _, c := range cidrs(n) {
			if len(ips) == 0 || strings.Contains(c, ":") != strings.Contains(ips[0], ":") {
				continue
			}
			out, err := exec.Command("ip", "route", "replace", c, "via", ips[0]).CombinedOutput()
			if err != nil {
				return fmt.Errorf("ip route replace %s via %s: %v: %s", c, ips[0], err, out)
			}
		}
	}
	return nil
}

func main() {
	self := os.Getenv("NODE_NAME")
	confDir := os.Getenv("CNI_CONF_DIR")
	if confDir == "" {
		confDir = "/etc/cni/net.d"
	}
	if self == "" {
		log.Fatal("NODE_NAME is not set (downward API spec.nodeName)")
	}
	c, err := newClient()
	if err != nil {
		log.Fatalf("in-cluster credentials: %v", err)
	}
	backoff := time.Second
	for {
		list, err := c.listNodes()
		if err == nil {
			err = reconcile(self, confDir, list)
		}
		if err == nil {
			backoff = time.Second
			err = c.watchNodes(list.Metadata.ResourceVersion)
		}
		if err != nil {
			log.Printf("%v (retrying in %s)", err, backoff)
			time.Sleep(backoff)
			if backoff < 30*time.Second {
				backoff *= 2
			}
		}
	}
}
