#!/usr/bin/env python3
"""What a farm costs: engine round trips per request, and the latency it adds.

Starts a redis-server (or memcached, ENGINE=memcache) and three event-MPM apache2 servers
sharing it through `DOSCache redis:…`, plus one apache2 with the same configuration alone
(`DOSCache shmcb:none`), all on loopback, with conf/shield.conf's counts (page 90/60 s,
site 500/120 s). mod_remoteip gives every simulated client its own address.

Patterns (requests spread round-robin over the three servers, one at a time):
  patrol-repeat  CLIENTS clients, each asking its 3 pages 5 times (15 requests, under every count)
  patrol-crawl   CLIENTS clients, each asking 15 distinct pages once (a crawler under its counts)
  blocked        one client blocked farm-wide (shieldctl --cache … block), 300 requests
Round trips are the servers' own count (BackendRoundTrips on the status page), summed over the
three servers, divided by the requests of the pattern.

Latency: per-request wall time seen by this client, p50 and p99, for patrol-repeat against the
farm and against the single server (same requests, same client), in alternating rounds.

Environment: CLIENTS=200 ROUNDS=3 ENGINE=redis|memcache MOD_SHIELD_SO=path KEEP=1
"""
import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = "/usr/lib/apache2/modules"
CLIENTS = int(os.environ.get("CLIENTS", "200"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
ENGINE = os.environ.get("ENGINE", "redis")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def module_so():
    so = os.environ.get("MOD_SHIELD_SO")
    if so:
        return so
    out = subprocess.run([f"{REPO}/scripts/build-module", "release"], check=True,
                         capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


class Server:
    def __init__(self, work, name, so, cache, docs):
        self.root = os.path.join(work, name)
        self.port = free_port()
        os.makedirs(self.root)
        user = "User nobody\nGroup nogroup\n" if os.getuid() == 0 else ""
        conf = f"""ServerRoot {self.root}
ServerName www.example.com:80
Listen 127.0.0.1:{self.port}
PidFile {self.root}/httpd.pid
DefaultRuntimeDir {self.root}
ErrorLog {self.root}/error.log
LogLevel warn
{user}LoadModule mpm_event_module {MODULES}/mod_mpm_event.so
LoadModule authz_core_module {MODULES}/mod_authz_core.so
LoadModule mime_module {MODULES}/mod_mime.so
LoadModule remoteip_module {MODULES}/mod_remoteip.so
LoadModule shield_module {so}
TypesConfig /etc/mime.types
RemoteIPHeader X-Forwarded-For
RemoteIPInternalProxy 127.0.0.1
DocumentRoot {docs}
<Directory {docs}>
    Require all granted
</Directory>
KeepAlive On
MaxKeepAliveRequests 0
Include {REPO}/conf/shield.conf
DOSCache {cache}
DOSLogDir {self.root}
<Location /shield-status>
    SetHandler shield-handler
    DOSEnabled off
</Location>
"""
        with open(os.path.join(self.root, "httpd.conf"), "w") as f:
            f.write(conf)
        subprocess.run(["/usr/sbin/apache2", "-f", f"{self.root}/httpd.conf", "-k", "start"],
                       check=True)
        for _ in range(100):
            try:
                if self.get("/p0.html", "127.0.0.2")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        self.conn = None

    def get(self, path, client):
        if getattr(self, "conn", None) is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            self.conn.request("GET", path, headers={"X-Forwarded-For": client})
            r = self.conn.getresponse()
            r.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = None
            raise
        if r.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        return r.status, None

    def auto(self, key):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        c.request("GET", "/shield-status?auto")
        body = c.getresponse().read().decode()
        c.close()
        for line in body.splitlines():
            if line.startswith(key + ": "):
                return int(line.split(": ", 1)[1])
        return 0

    def stop(self):
        subprocess.run(["/usr/sbin/apache2", "-f", f"{self.root}/httpd.conf", "-k", "stop"],
                       capture_output=True)


def pattern(name, round_no):
    """(client, path) pairs of one pattern; fresh clients each round."""
    reqs = []
    if name == "patrol-repeat":
        for c in range(CLIENTS):
            ip = f"10.{round_no}.{c // 250}.{c % 250 + 1}"
            for _ in range(5):
                for p in range(3):
                    reqs.append((ip, f"/p{p}.html"))
    elif name == "patrol-crawl":
        for c in range(CLIENTS):
            ip = f"10.{100 + round_no}.{c // 250}.{c % 250 + 1}"
            for p in range(15):
                reqs.append((ip, f"/p{p}.html"))
    return reqs


def run(servers, reqs, lat=None):
    statuses = {}
    for i, (ip, path) in enumerate(reqs):
        s = servers[i % len(servers)]
        t = time.perf_counter()
        st, _ = s.get(path, ip)
        if lat is not None:
            lat.append(time.perf_counter() - t)
        statuses[st] = statuses.get(st, 0) + 1
    return statuses


def trips(servers):
    return sum(s.auto("BackendRoundTrips") for s in servers)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    so = module_so()
    work = tempfile.mkdtemp(prefix="shield-farm.")
    os.chmod(work, 0o755)
    docs = os.path.join(work, "htdocs")
    os.makedirs(docs)
    for p in range(15):
        with open(os.path.join(docs, f"p{p}.html"), "w") as f:
            f.write("<html><body>" + "farm bench page " * 60 + "</body></html>\n")
    os.chmod(docs, 0o755)
    eport = free_port()
    if ENGINE == "redis":
        engine = subprocess.Popen(["redis-server", "--port", str(eport), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    else:
        engine = subprocess.Popen(["memcached", "-l", "127.0.0.1", "-p", str(eport), "-U", "0",
                                   "-u", "nobody"], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    cache = f"{ENGINE}:127.0.0.1:{eport}"
    farm, alone = [], None
    try:
        farm = [Server(work, f"farm{i}", so, cache, docs) for i in range(3)]
        alone = Server(work, "alone", so, "shmcb:none(524288)", docs)
        time.sleep(0.5)
        print(f"engine {cache}, 3 servers, {CLIENTS} clients per pattern, {ROUNDS} rounds")
        print(f"{'pattern':<15} {'requests':>9} {'round trips':>12} {'per request':>12}  statuses")
        for name in ("patrol-repeat", "patrol-crawl"):
            per = []
            for rnd in range(ROUNDS):
                reqs = pattern(name, rnd)
                before = trips(farm)
                st = run(farm, reqs)
                used = trips(farm) - before
                per.append((len(reqs), used, st))
            n = sum(p[0] for p in per)
            t = sum(p[1] for p in per)
            print(f"{name:<15} {n:>9} {t:>12} {t / n:>12.3f}  {per[-1][2]}")
        ctl = os.path.join(os.path.dirname(so), "shieldctl")
        subprocess.run([ctl, "--cache", cache, "block", "192.0.2.99", "600"], check=True,
                       capture_output=True)
        time.sleep(0.3)
        before = trips(farm)
        st = run(farm, [("192.0.2.99", f"/p{i % 15}.html") for i in range(300)])
        used = trips(farm) - before
        print(f"{'blocked':<15} {300:>9} {used:>12} {used / 300:>12.3f}  {st}")
        lat_farm, lat_alone = [], []
        for rnd in range(ROUNDS):
            run(farm, pattern("patrol-repeat", 10 + rnd), lat_farm)
            run([alone], pattern("patrol-repeat", 20 + rnd), lat_alone)
        print("latency, patrol-repeat, one request at a time (ms):")
        for label, xs in (("farm of 3", lat_farm), ("single server", lat_alone)):
            print(f"  {label:<14} p50 {pct(xs, 0.5) * 1e3:.3f}  p99 {pct(xs, 0.99) * 1e3:.3f}"
                  f"  ({len(xs)} requests)")
        print(f"  added          p50 {(pct(lat_farm, 0.5) - pct(lat_alone, 0.5)) * 1e3:+.3f}"
              f"  p99 {(pct(lat_farm, 0.99) - pct(lat_alone, 0.99)) * 1e3:+.3f}")
    finally:
        for s in farm + ([alone] if alone else []):
            s.stop()
        engine.send_signal(signal.SIGTERM)
        engine.wait()
        if os.environ.get("KEEP") == "1":
            print("kept", work, file=sys.stderr)
        else:
            time.sleep(0.5)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
