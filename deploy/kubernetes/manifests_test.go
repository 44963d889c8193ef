// Package kubernetes_test checks the manifests in this folder: each one
// decodes strictly into the Kubernetes API types (an unknown or misspelled
// field is an error), and the Deployment's numbers agree with the settings
// that the ConfigMap, the Secret and the Deployment's env resolve to through
// mcpgateway's own configuration loader, so the manifests cannot drift from
// the code.
package kubernetes_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/mcpgateway/mcpgateway/config"
)

const (
	// placeholder marks a value the operator must replace (secret.yaml).
	placeholder = "REPLACE-ME"
	// graceMargin is what terminationGracePeriodSeconds must hold beyond
	// ShutdownDelay + GracefulTimeout: the master serves the accept queue
	// before it shuts the sockets down (a second at most), kills a worker
	// still alive 1 s after GracefulTimeout, then reaps it and exits.
	graceMargin = 5 * time.Second
	// The image's user (Containerfile: distroless :nonroot, USER 65532).
	imageUID = 65532
	image    = "mcpgateway/mcpgateway:latest"

	// From docs/performance.md ("3 memory (RSS)", 2 workers, wrk -c200): the
	// master under load 11.6 MiB, each worker under load 18.7 MiB. The memory
	// request must hold master + Workers x worker, for the resolved Workers.
	masterMiB = 11.6
	workerMiB = 18.7
)

// manifests holds one object of each kind this folder ships.
type manifests struct {
	Deployment *appsv1.Deployment
	Service    *corev1.Service
	ConfigMap  *corev1.ConfigMap
	Secret     *corev1.Secret
	PDB        *policyv1.PodDisruptionBudget
	HPA        *autoscalingv2.HorizontalPodAutoscaler
}

// newObject returns an empty object of the API type for apiVersion and kind.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	}
	return nil, fmt.Errorf("apiVersion %q kind %q: not a kind this test knows", apiVersion, kind)
}

// decodeStrict decodes one YAML document into obj, refusing unknown fields
// and duplicate keys (sigs.k8s.io/yaml's UnmarshalStrict). encoding/json
// matches field names case-insensitively, so the document's keys are also
// compared, case-sensitively, with those of obj encoded back to JSON: a
// "Replicas:" that json folded onto "replicas" is refused too.
func decodeStrict(doc []byte, obj any) error {
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return err
	}
	var written any
	if err := yaml.Unmarshal(doc, &written); err != nil {
		return err
	}
	back, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	var decoded any
	if err := json.Unmarshal(back, &decoded); err != nil {
		return err
	}
	return sameKeys("", written, decoded)
}

// sameKeys reports a key of written that decoded lacks. A key written with a
// zero value may be missing from decoded (omitempty drops it).
func sameKeys(at string, written, decoded any) error {
	switch w := written.(type) {
	case map[string]any:
		d, _ := decoded.(map[string]any)
		for _, k := range slices.Sorted(maps.Keys(w)) {
			dv, ok := d[k]
			if !ok {
				if isZero(w[k]) {
					continue
				}
				return fmt.Errorf("unknown field %q", strings.TrimPrefix(at+"."+k, "."))
			}
			if err := sameKeys(at+"."+k, w[k], dv); err != nil {
				return err
			}
		}
	case []any:
		d, _ := decoded.([]any)
		for i, v := range w {
			if i >= len(d) {
				return fmt.Errorf("%s[%d]: lost in decoding", at, i)
			}
			if err := sameKeys(fmt.Sprintf("%s[%d]", at, i), v, d[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

func isZero(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Map, reflect.Slice:
		return rv.Len() == 0
	}
	return rv.IsZero()
}

// splitDocuments splits a YAML stream on "---" lines and drops documents
// holding only comments or blank lines.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		if hasContent(cur.Bytes()) {
			docs = append(docs, bytes.Clone(cur.Bytes()))
		}
		cur.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimRight(line, " \t") == "---" || strings.HasPrefix(line, "--- ") {
			flush()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

func hasContent(doc []byte) bool {
	for line := range strings.Lines(string(doc)) {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			return true
		}
	}
	return false
}

// decodeDocument decodes one document into the API type its apiVersion and
// kind name, strictly.
func decodeDocument(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	obj, err := newObject(tm.APIVersion, tm.Kind)
	if err != nil {
		return nil, err
	}
	if err := decodeStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
	}
	return obj, nil
}

// loadManifests decodes every .yaml/.yml file of dir; exactly one object of
// each kind is expected.
func loadManifests(dir string) (*manifests, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.y*ml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	m := &manifests{}
	var errs []error
	set := func(file string, dst any, obj any) {
		d := reflect.ValueOf(dst).Elem()
		if !d.IsNil() {
			errs = append(errs, fmt.Errorf("%s: a second %T", file, obj))
			return
		}
		d.Set(reflect.ValueOf(obj))
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		for i, doc := range splitDocuments(data) {
			obj, err := decodeDocument(doc)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s, document %d: %w", filepath.Base(file), i+1, err))
				continue
			}
			switch o := obj.(type) {
			case *appsv1.Deployment:
				set(file, &m.Deployment, o)
			case *corev1.Service:
				set(file, &m.Service, o)
			case *corev1.ConfigMap:
				set(file, &m.ConfigMap, o)
			case *corev1.Secret:
				set(file, &m.Secret, o)
			case *policyv1.PodDisruptionBudget:
				set(file, &m.PDB, o)
			case *autoscalingv2.HorizontalPodAutoscaler:
				set(file, &m.HPA, o)
			}
		}
	}
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		if v.Field(i).IsNil() {
			errs = append(errs, fmt.Errorf("%s: no %s manifest", dir, v.Type().Field(i).Name))
		}
	}
	return m, errors.Join(errs...)
}

// containerfile is what the test needs from the image's build file: the final
// stage's ENV and ENTRYPOINT.
type containerfile struct {
	Env        map[string]string
	Entrypoint []string
}

func readContainerfile(file string) (*containerfile, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	cf := &containerfile{Env: map[string]string{}}
	var instr []string
	var cur strings.Builder
	for line := range strings.Lines(string(data)) {
		line = strings.TrimRight(line, "\r\n")
		if t := strings.TrimSpace(line); cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(line), "#") { // a comment inside a continuation
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		instr = append(instr, cur.String())
		cur.Reset()
	}
	for _, in := range instr {
		word, rest, _ := strings.Cut(strings.TrimSpace(in), " ")
		switch strings.ToUpper(word) {
		case "FROM": // a new stage: only the last one's are the image's
			cf.Env, cf.Entrypoint = map[string]string{}, nil
		case "ENV":
			for _, kv := range strings.Fields(rest) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return nil, fmt.Errorf("%s: ENV %q: only KEY=VALUE is understood here", file, rest)
				}
				cf.Env[k] = strings.Trim(v, `"`)
			}
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &cf.Entrypoint); err != nil {
				return nil, fmt.Errorf("%s: ENTRYPOINT %s: want the exec (JSON) form: %w", file, rest, err)
			}
		}
	}
	if len(cf.Entrypoint) == 0 {
		return nil, fmt.Errorf("%s: no ENTRYPOINT in the final stage", file)
	}
	return cf, nil
}

// gateway returns the Deployment's container named "gateway".
func gateway(d *appsv1.Deployment) (*corev1.Container, error) {
	cs := d.Spec.Template.Spec.Containers
	for i := range cs {
		if cs[i].Name == "gateway" {
			return &cs[i], nil
		}
	}
	return nil, fmt.Errorf("deployment %s: no container named gateway", d.Name)
}

// secretValues returns a Secret's values, stringData over data as the API
// server merges them.
func secretValues(s *corev1.Secret) map[string]string {
	out := map[string]string{}
	for k, v := range s.Data {
		out[k] = string(v)
	}
	for k, v := range s.StringData {
		out[k] = v
	}
	return out
}

// environ builds the container's environment as the kubelet does: the
// image's ENV, then envFrom in order, then env (later wins). secrets holds
// the Secret's values to use.
func environ(m *manifests, c *corev1.Container, imageEnv, secrets map[string]string) ([]string, error) {
	vars := map[string]string{}
	for k, v := range imageEnv {
		vars[k] = v
	}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			if from.ConfigMapRef.Name != m.ConfigMap.Name {
				return nil, fmt.Errorf("envFrom names ConfigMap %q; the manifest is %q", from.ConfigMapRef.Name, m.ConfigMap.Name)
			}
			for k, v := range m.ConfigMap.Data {
				vars[from.Prefix+k] = v
			}
		case from.SecretRef != nil:
			if from.SecretRef.Name != m.Secret.Name {
				return nil, fmt.Errorf("envFrom names Secret %q; the manifest is %q", from.SecretRef.Name, m.Secret.Name)
			}
			for k, v := range secrets {
				vars[from.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			if strings.Contains(e.Value, "$(") {
				return nil, fmt.Errorf("env %s: $(VAR) expansion is not resolved by this test", e.Name)
			}
			vars[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := secrets[ref.Key]
			if ref.Name != m.Secret.Name || !ok {
				return nil, fmt.Errorf("env %s: Secret %q has no key %q", e.Name, ref.Name, ref.Key)
			}
			vars[e.Name] = v
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			v, ok := m.ConfigMap.Data[ref.Key]
			if ref.Name != m.ConfigMap.Name || !ok {
				return nil, fmt.Errorf("env %s: ConfigMap %q has no key %q", e.Name, ref.Name, ref.Key)
			}
			vars[e.Name] = v
		default: // fieldRef, resourceFieldRef: not settings of the gateway
			delete(vars, e.Name)
		}
	}
	out := make([]string, 0, len(vars))
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		out = append(out, k+"="+vars[k])
	}
	return out, nil
}

// filledSecret is the Secret as an operator fills it in: every placeholder
// replaced (with a 64-hex-digit JWT key, as `openssl rand -hex 32` or
// `mcpgateway secret` make: a short or known key is refused on 0.0.0.0). The shipped values are checked to
// be placeholders separately; the settings are resolved with filled ones, as
// a deployed pod would see them.
func filledSecret(s *corev1.Secret) map[string]string {
	out := secretValues(s)
	for k, v := range out {
		out[k] = strings.ReplaceAll(v, placeholder, "standin")
	}
	if _, ok := out["JWT_SECRET_KEY"]; ok {
		out["JWT_SECRET_KEY"] = strings.Repeat("5e", 32)
	}
	return out
}

// cpus is the CPU count a container's Go runtime sees: its CPU limit rounded
// up (GOMAXPROCS follows it), else its request, else 1.
func cpus(c *corev1.Container) int {
	for _, rl := range []corev1.ResourceList{c.Resources.Limits, c.Resources.Requests} {
		if q, ok := rl[corev1.ResourceCPU]; ok {
			return int(max((q.MilliValue()+999)/1000, 1))
		}
	}
	return 1
}

// resolve runs mcpgateway's configuration loader on what the container gets:
// the image's ENV, the ConfigMap, the (filled-in) Secret, the env entries and
// the container's args as serve's flags, in an empty directory (the image
// ships no gunicorn.conf.go or .env).
func resolve(t *testing.T, m *manifests, cf *containerfile) (*config.Resolved, []string) {
	t.Helper()
	c, err := gateway(m.Deployment)
	if err != nil {
		t.Fatal(err)
	}
	env, err := environ(m, c, cf.Env, filledSecret(m.Secret))
	if err != nil {
		t.Fatal(err)
	}
	res, err := config.Load(config.Input{Args: c.Args, Environ: env, Dir: t.TempDir(), NumCPU: cpus(c)})
	if err != nil {
		t.Fatalf("config.Load refuses the manifests' settings: %v\nenvironment: %q", err, env)
	}
	return res, env
}

// containerPort resolves a probe's or a Service's port (a number or the
// name of one of the container's ports) to a number.
func containerPort(c *corev1.Container, p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return int(p.IntVal), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("no container port named %q", p.StrVal)
}

func hostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(port)
	return host, n, err
}

// checkDeployment returns what in the Deployment disagrees with the resolved
// settings s: the stop timing, the probes, the ports, the security context,
// the writable paths and the memory request. nil when all agree.
func checkDeployment(d *appsv1.Deployment, s config.Settings) error {
	c, err := gateway(d)
	if err != nil {
		return err
	}
	pod := d.Spec.Template.Spec
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	// Stop timing. TERM comes after the preStop hook, if any; then the
	// server serves for ShutdownDelay and drains for GracefulTimeout.
	grace := 30 * time.Second // Kubernetes' default
	if pod.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	}
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		if c.Lifecycle.PreStop.Sleep == nil {
			fail("preStop: only the built-in sleep action can run in the distroless image (no shell, no sleep binary); use SHUTDOWN_DELAY")
		} else {
			preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
	}
	if need := preStop + s.ShutdownDelay + s.GracefulTimeout + graceMargin; grace < need {
		fail("terminationGracePeriodSeconds %d is shorter than preStop %s + ShutdownDelay %s + GracefulTimeout %s + margin %s = %s: the kubelet would SIGKILL the pod mid-drain",
			int(grace/time.Second), preStop, s.ShutdownDelay, s.GracefulTimeout, graceMargin, need)
	}
	if s.ShutdownDelay+preStop <= 0 {
		fail("ShutdownDelay is 0 and there is no preStop sleep: connections sent while the endpoints removal propagates are refused")
	}

	// Probes on the health port, answered by the master.
	if s.HealthBind == "" {
		fail("HealthBind is not set: the probes would queue behind requests on the main port")
	} else {
		host, port, err := hostPort(s.HealthBind)
		if err != nil {
			fail("HealthBind %q: %v", s.HealthBind, err)
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() || host == "localhost" {
			fail("HealthBind %q listens on loopback: the kubelet probes the pod's IP", s.HealthBind)
		}
		probes := []struct {
			name, path string
			p          *corev1.Probe
			required   bool
		}{
			{"livenessProbe", "/health", c.LivenessProbe, true},
			{"readinessProbe", "/ready", c.ReadinessProbe, true},
			{"startupProbe", "/health", c.StartupProbe, false},
		}
		for _, pr := range probes {
			if pr.p == nil {
				if pr.required {
					fail("%s: missing", pr.name)
				}
				continue
			}
			g := pr.p.HTTPGet
			if g == nil {
				fail("%s: not an httpGet probe", pr.name)
				continue
			}
			if g.Path != pr.path {
				fail("%s: path %q, want %q", pr.name, g.Path, pr.path)
			}
			if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
				fail("%s: scheme %s, the health port speaks HTTP", pr.name, g.Scheme)
			}
			got, err := containerPort(c, g.Port)
			if err != nil {
				fail("%s: %v", pr.name, err)
			} else if got != port {
				fail("%s: port %d, but HealthBind %q listens on %d", pr.name, got, s.HealthBind, port)
			}
		}
	}

	// The main port.
	for _, addr := range s.Bind {
		if strings.HasPrefix(addr, "unix:") {
			continue
		}
		_, port, err := hostPort(addr)
		if err != nil {
			fail("Bind %q: %v", addr, err)
			continue
		}
		if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return int(p.ContainerPort) == port }) {
			fail("Bind %q listens on %d, which is not a containerPort", addr, port)
		}
	}

	// Non-root, read-only root, no privilege.
	sc := c.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		fail("readOnlyRootFilesystem is not true")
	}
	if !(sc.RunAsNonRoot != nil && *sc.RunAsNonRoot || sc.RunAsNonRoot == nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot) {
		fail("runAsNonRoot is not true")
	}
	uid := sc.RunAsUser
	if uid == nil {
		uid = psc.RunAsUser
	}
	if uid == nil || *uid != imageUID {
		fail("runAsUser is not %d, the image's user", imageUID)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		fail("allowPrivilegeEscalation is not false")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		fail("capabilities: want drop [ALL] and nothing added")
	}

	// Paths the server writes: on a writable volume, under a read-only root.
	writable := func(setting, p string) {
		if !path.IsAbs(p) {
			fail("%s %q: relative, so under the working directory on the read-only root", setting, p)
			return
		}
		for _, vm := range c.VolumeMounts {
			if vm.ReadOnly || (p != vm.MountPath && !strings.HasPrefix(p, strings.TrimSuffix(vm.MountPath, "/")+"/")) {
				continue
			}
			for _, v := range pod.Volumes {
				if v.Name == vm.Name && v.EmptyDir != nil {
					return
				}
			}
		}
		fail("%s %q is not on a writable emptyDir volume mount: the root file system is read-only", setting, p)
	}
	if s.ControlSocket != "off" {
		writable("ControlSocket", s.ControlSocket)
	}
	if s.Pidfile != "" {
		writable("Pidfile", s.Pidfile)
	}

	// Resources, from docs/performance.md's figures for the resolved Workers.
	cpu, okCPU := c.Resources.Requests[corev1.ResourceCPU]
	mem, okMem := c.Resources.Requests[corev1.ResourceMemory]
	if !okCPU || cpu.IsZero() {
		fail("no CPU request: the HPA's utilization target has nothing to divide by")
	}
	need := resource.MustParse(fmt.Sprintf("%dMi", int(masterMiB+float64(s.Workers)*workerMiB+0.999)))
	if !okMem || mem.Cmp(need) < 0 {
		fail("memory request %s is below master %.1f MiB + %d workers x %.1f MiB = %s (docs/performance.md, under load)",
			mem.String(), masterMiB, s.Workers, workerMiB, need.String())
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if l, ok := c.Resources.Limits[name]; ok {
			if r := c.Resources.Requests[name]; l.Cmp(r) < 0 {
				fail("%s limit %s is below its request %s", name, l.String(), r.String())
			}
		}
	}
	return errors.Join(errs...)
}

// checkConfigMap returns an error when the loader warned about the settings
// or did not read one of the ConfigMap's keys: a misspelled name is ignored
// (or only warned about), and its default is used in silence.
func checkConfigMap(cm *corev1.ConfigMap, res *config.Resolved) error {
	var errs []error
	for _, w := range res.Warnings {
		errs = append(errs, fmt.Errorf("config.Load warns: %s", w))
	}
	read := map[string]bool{}
	for _, src := range res.Sources {
		if src.Kind == "env" {
			read[src.Name] = true
		}
	}
	for _, k := range slices.Sorted(maps.Keys(cm.Data)) {
		if !read[k] {
			errs = append(errs, fmt.Errorf("ConfigMap key %s is not a setting that the configuration loader read", k))
		}
	}
	return errors.Join(errs...)
}

func selects(sel *metav1.LabelSelector, labels map[string]string) bool {
	if sel == nil || len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0 {
		return false
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	return len(sel.MatchExpressions) == 0
}

func setup(t *testing.T) (*manifests, *containerfile) {
	t.Helper()
	m, err := loadManifests(".")
	if err != nil {
		t.Fatal(err)
	}
	cf, err := readContainerfile("../../Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	return m, cf
}

func TestManifests(t *testing.T) {
	m, cf := setup(t)
	res, env := resolve(t, m, cf)
	s := res.Settings
	t.Logf("resolved: profile %s, Bind %v, HealthBind %s, Workers %d, ShutdownDelay %s, GracefulTimeout %s, ControlSocket %s, Pidfile %s",
		res.Profile, s.Bind, s.HealthBind, s.Workers, s.ShutdownDelay, s.GracefulTimeout, s.ControlSocket, s.Pidfile)

	if err := checkConfigMap(m.ConfigMap, res); err != nil {
		t.Error(err)
	}
	if err := checkDeployment(m.Deployment, s); err != nil {
		t.Error(err)
	}

	d := m.Deployment
	pod := d.Spec.Template.Spec
	c, err := gateway(d)
	if err != nil {
		t.Fatal(err)
	}
	if c.Image != image {
		t.Errorf("image %q, want %q", c.Image, image)
	}
	if len(c.Command) > 0 && !slices.Equal(c.Command, cf.Entrypoint) {
		t.Errorf("command %q differs from the Containerfile's ENTRYPOINT %q", c.Command, cf.Entrypoint)
	}
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		t.Error("a preStop hook: SHUTDOWN_DELAY does its job (docs/kubernetes.md)")
	}
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Error("enableServiceLinks is not false: Services' FOO_PORT variables could set the gateway's settings (a Service named granian sets GRANIAN_PORT)")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Error("replicas: want several")
	}
	if !selects(d.Spec.Selector, d.Spec.Template.Labels) {
		t.Error("the Deployment's selector does not select its own pods")
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "0" {
		t.Error("rollingUpdate.maxUnavailable: want 0 (a new pod is ready before an old one stops)")
	}

	// The Secret ships placeholders only, and has what the Deployment takes.
	secrets := secretValues(m.Secret)
	for _, k := range []string{"JWT_SECRET_KEY", "DATABASE_URL", "REDIS_URL"} {
		if _, ok := secrets[k]; !ok {
			t.Errorf("Secret: no %s", k)
		}
	}
	for k, v := range secrets {
		if !strings.Contains(v, placeholder) {
			t.Errorf("Secret %s = %q: ships a usable value; want a %s placeholder", k, v, placeholder)
		}
	}
	if len(m.Secret.Data) > 0 {
		t.Error("Secret: use stringData, so a reader sees the placeholders")
	}
	// The master refuses the shipped JWT_SECRET_KEY placeholder: the pod
	// listens on every interface, where a known key would let anyone mint
	// tokens (config's weak-secret rule, docs/security.md).
	if config.LoopbackOnly(s.Bind) {
		t.Errorf("the Deployment binds %v, loopback only: a Service cannot reach it", s.Bind)
	}
	{
		c, err := gateway(m.Deployment)
		if err != nil {
			t.Fatal(err)
		}
		shipped := filledSecret(m.Secret)
		shipped["JWT_SECRET_KEY"] = secrets["JWT_SECRET_KEY"]
		penv, err := environ(m, c, cf.Env, shipped)
		if err != nil {
			t.Fatal(err)
		}
		_, err = config.Load(config.Input{Args: c.Args, Environ: penv, Dir: t.TempDir(), NumCPU: cpus(c)})
		if !errors.Is(err, config.ErrWeakSecret) || !strings.Contains(fmt.Sprint(err), "JWT_SECRET_KEY") {
			t.Errorf("config.Load with the shipped JWT_SECRET_KEY placeholder: %v; want the weak-secret refusal naming JWT_SECRET_KEY", err)
		}
	}
	// The settings that come from the Secret did reach the loader.
	if !strings.HasPrefix(s.DatabaseURL, "postgresql://") || s.CacheType != "redis" || !strings.HasPrefix(s.RedisURL, "redis") {
		t.Errorf("DatabaseURL %q, CacheType %q, RedisURL %q: want PostgreSQL and Redis as external services", s.DatabaseURL, s.CacheType, s.RedisURL)
	}
	if src := res.Sources["JWTSecretKey"]; src.Kind != "env" {
		t.Errorf("JWTSecretKey comes from %s, not the Secret", src)
	}

	// Service: to the main port.
	svc := m.Service
	if !selects(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, d.Spec.Template.Labels) {
		t.Error("the Service's selector does not select the Deployment's pods")
	}
	_, bindPort, err := hostPort(s.Bind[0])
	if err != nil {
		t.Fatal(err)
	}
	_, healthPort, _ := hostPort(s.HealthBind)
	for _, p := range svc.Spec.Ports {
		target := p.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(p.Port)
		}
		got, err := containerPort(c, target)
		switch {
		case err != nil:
			t.Errorf("Service port %s: %v", p.Name, err)
		case got == healthPort:
			t.Errorf("Service port %s exposes the health port", p.Name)
		case got != bindPort:
			t.Errorf("Service port %s targets %d, the gateway listens on %d", p.Name, got, bindPort)
		}
	}

	// PDB and HPA.
	if !selects(m.PDB.Spec.Selector, d.Spec.Template.Labels) {
		t.Error("the PodDisruptionBudget does not select the Deployment's pods")
	}
	h := m.HPA
	if ref := h.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.Name != d.Name || ref.APIVersion != "apps/v1" {
		t.Errorf("HPA scales %s %s/%s, not the Deployment", ref.APIVersion, ref.Kind, ref.Name)
	}
	minR := int32(1)
	if h.Spec.MinReplicas != nil {
		minR = *h.Spec.MinReplicas
	}
	if minR < 2 || h.Spec.MaxReplicas < minR {
		t.Errorf("HPA %d..%d: want at least 2 replicas at all times", minR, h.Spec.MaxReplicas)
	}
	if d.Spec.Replicas != nil && (*d.Spec.Replicas < minR || *d.Spec.Replicas > h.Spec.MaxReplicas) {
		t.Errorf("replicas %d is outside the HPA's %d..%d", *d.Spec.Replicas, minR, h.Spec.MaxReplicas)
	}
	if mu := m.PDB.Spec.MaxUnavailable; mu == nil || mu.Type != intstr.Int || mu.IntVal < 1 || mu.IntVal >= minR {
		t.Errorf("PDB maxUnavailable %v: want a number from 1 to below the HPA's minimum %d", mu, minR)
	}
	if t.Failed() {
		t.Logf("environment given to config.Load: %q", env)
	}
}

// TestStrictDecoding proves that the decoder refuses what the API server
// would refuse or silently drop.
func TestStrictDecoding(t *testing.T) {
	orig, err := os.ReadFile("deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeDocument(orig); err != nil {
		t.Fatalf("the shipped deployment.yaml: %v", err)
	}
	cases := []struct{ name, from, to string }{
		{"misspelled field", "terminationGracePeriodSeconds:", "terminationGracePeriodSecond:"},
		{"field of another type", "      enableServiceLinks: false", "      enableServiceLinks: false\n      restartPolicyy: Always"},
		{"wrong case", "  replicas: 3", "  Replicas: 3"},
		{"duplicate key", "  replicas: 3", "  replicas: 3\n  replicas: 4"},
		{"unknown probe field", "            failureThreshold: 3", "            failureThreshold: 3\n            initialDelay: 5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(string(orig), tc.from, tc.to, 1)
			if doc == string(orig) {
				t.Fatalf("%q is not in deployment.yaml", tc.from)
			}
			if _, err := decodeDocument([]byte(doc)); err == nil {
				t.Fatal("decoded without an error")
			} else {
				t.Logf("refused: %v", err)
			}
		})
	}
	t.Run("unknown kind", func(t *testing.T) {
		if _, err := decodeDocument([]byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n")); err == nil {
			t.Fatal("a kind the test does not know was accepted")
		}
	})
}

// TestInvariantsFail proves that checkDeployment catches a Deployment that
// disagrees with the settings.
func TestInvariantsFail(t *testing.T) {
	m, cf := setup(t)
	res, _ := resolve(t, m, cf)
	s := res.Settings
	if err := checkDeployment(m.Deployment, s); err != nil {
		t.Fatalf("the shipped Deployment: %v", err)
	}
	cases := []struct {
		name   string
		change func(d *appsv1.Deployment, s *config.Settings)
		want   string
	}{
		{"grace period shorter than the settings need", func(d *appsv1.Deployment, s *config.Settings) {
			short := int64((s.ShutdownDelay+s.GracefulTimeout)/time.Second) + 1 // below the margin
			d.Spec.Template.Spec.TerminationGracePeriodSeconds = &short
		}, "terminationGracePeriodSeconds"},
		{"grace period unset (30 s default)", func(d *appsv1.Deployment, s *config.Settings) {
			d.Spec.Template.Spec.TerminationGracePeriodSeconds = nil
		}, "terminationGracePeriodSeconds"},
		{"graceful timeout raised in the settings only", func(d *appsv1.Deployment, s *config.Settings) {
			s.GracefulTimeout += time.Minute
		}, "terminationGracePeriodSeconds"},
		{"a preStop sleep not in the grace period", func(d *appsv1.Deployment, s *config.Settings) {
			c, _ := gateway(d)
			c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 30}}}
		}, "terminationGracePeriodSeconds"},
		{"no shutdown delay", func(d *appsv1.Deployment, s *config.Settings) {
			s.ShutdownDelay = 0
		}, "ShutdownDelay is 0"},
		{"readiness on the main port", func(d *appsv1.Deployment, s *config.Settings) {
			c, _ := gateway(d)
			c.ReadinessProbe.HTTPGet.Port = intstr.FromString("http")
		}, "readinessProbe: port"},
		{"health port moved in the settings only", func(d *appsv1.Deployment, s *config.Settings) {
			s.HealthBind = "0.0.0.0:9090"
		}, "HealthBind"},
		{"health port on loopback", func(d *appsv1.Deployment, s *config.Settings) {
			s.HealthBind = "127.0.0.1:8081"
		}, "loopback"},
		{"liveness on /ready", func(d *appsv1.Deployment, s *config.Settings) {
			c, _ := gateway(d)
			c.LivenessProbe.HTTPGet.Path = "/ready"
		}, "livenessProbe: path"},
		{"main port moved in the settings only", func(d *appsv1.Deployment, s *config.Settings) {
			s.Bind = []string{"0.0.0.0:8000"}
		}, "not a containerPort"},
		{"writable root", func(d *appsv1.Deployment, s *config.Settings) {
			c, _ := gateway(d)
			f := false
			c.SecurityContext.ReadOnlyRootFilesystem = &f
		}, "readOnlyRootFilesystem"},
		{"root", func(d *appsv1.Deployment, s *config.Settings) {
			c, _ := gateway(d)
			f, root := false, int64(0)
			c.SecurityContext.RunAsNonRoot, c.SecurityContext.RunAsUser = &f, &root
		}, "runAsNonRoot"},
		{"control socket off the volume", func(d *appsv1.Deployment, s *config.Settings) {
			s.ControlSocket = "/var/run/mcpgateway.ctl"
		}, "ControlSocket"},
		{"volume mounted read-only", func(d *appsv1.Deployment, s *config.Settings) {
			c, _ := gateway(d)
			for i := range c.VolumeMounts {
				c.VolumeMounts[i].ReadOnly = true
			}
		}, "ControlSocket"},
		{"too many workers for the memory request", func(d *appsv1.Deployment, s *config.Settings) {
			s.Workers = 16
		}, "memory request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, s := m.Deployment.DeepCopy(), s
			s.Bind = slices.Clone(s.Bind)
			tc.change(d, &s)
			err := checkDeployment(d, s)
			if err == nil {
				t.Fatal("checkDeployment found nothing wrong")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
			t.Logf("caught: %v", err)
		})
	}
}

// TestConfigMapFails proves that a ConfigMap key the loader does not read, or
// warns about, fails the test instead of leaving a default in force.
func TestConfigMapFails(t *testing.T) {
	for _, tc := range []struct{ name, from, to, want string }{
		{"misspelled plain name", "SHUTDOWN_DELAY", "SHUTDOWN_DELY", "SHUTDOWN_DELY"},
		{"misspelled GUNICORN_ name", "GUNICORN_GRACEFUL_TIMEOUT", "GUNICORN_GRACEFUL_TIMOUT", "GUNICORN_GRACEFUL_TIMOUT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, cf := setup(t)
			v, ok := m.ConfigMap.Data[tc.from]
			if !ok {
				t.Fatalf("no %s in the ConfigMap", tc.from)
			}
			delete(m.ConfigMap.Data, tc.from)
			m.ConfigMap.Data[tc.to] = v
			res, _ := resolve(t, m, cf)
			err := checkConfigMap(m.ConfigMap, res)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("checkConfigMap: %v; want an error naming %s", err, tc.want)
			}
			t.Logf("caught: %v", err)
		})
	}
	t.Run("a bad value is refused by config.Load", func(t *testing.T) {
		m, cf := setup(t)
		m.ConfigMap.Data["SHUTDOWN_DELAY"] = "five"
		c, _ := gateway(m.Deployment)
		env, err := environ(m, c, cf.Env, filledSecret(m.Secret))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := config.Load(config.Input{Environ: env, Dir: t.TempDir(), NumCPU: cpus(c)}); err == nil {
			t.Fatal("config.Load accepted SHUTDOWN_DELAY=five")
		} else {
			t.Logf("refused: %v", err)
		}
	})
}
