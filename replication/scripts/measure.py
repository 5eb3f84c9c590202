#!/usr/bin/env python3
"""Replication figures of docs/PERFORMANCE.md ("Replication"): starts a primary (and a standby) from
target/release/bookd, drives it with `bookd bench --addr`, samples the primary's /v1/status every 100 ms for
each standby's lag, and with --promote stops the primary and times `bookd promote` and the first
accepted write. Specs: WORKLOAD:CLIENTS:SYNC_STANDBYS:WITH_STANDBY, e.g. hotel:64:1:1. DUR=seconds."""
import subprocess, time, json, urllib.request, threading, shutil, os, sys, statistics
B="target/release/bookd"  # run from the repository root
root=os.environ.get("DATA", "/tmp/bookd-replication-bench")
def get(http, path):
    with urllib.request.urlopen(f"http://{http}{path}", timeout=5) as r: return json.loads(r.read())
def post(http, path, body, method="PUT"):
    req=urllib.request.Request(f"http://{http}{path}", data=body.encode(), method=method, headers={"Content-Type":"application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r: return r.status
    except urllib.error.HTTPError as e: return e.code
def start(cmd, name, args):
    d=f"{root}/{name}"
    p=subprocess.Popen([B,cmd,"--data-dir",d,"--http","127.0.0.1:0","--listen","127.0.0.1:0","--shards","2"]+args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ,BOOKD_LOG="warn"), text=True)
    for line in p.stdout:
        if line.startswith("bookd ready"):
            parts=dict(kv.split("=") for kv in line.split()[2:]); return p, parts["http"], parts["binary"]
def stop(p):
    p.terminate(); p.wait()
def load(binary, workload, clients, setup):
    dur=os.environ.get("DUR","10")
    args=[B,"bench","--addr",binary,"--workload",workload,"--clients",str(clients),"--connections","64","--duration",f"{dur}s","--warmup","2s"]
    return subprocess.run(args, capture_output=True, text=True).stdout
def sampler(http, out, stopflag):
    while not stopflag.is_set():
        try:
            s=get(http,"/v1/status")
            for sb in s.get("standbys",[]):
                for sh in sb["shards"]: out.append((sh["lag_records"], sh["lag_bytes"], sh["lag_ms"]))
        except Exception as e: pass
        time.sleep(0.1)
def run(label, workload, clients, sync, standby):
    shutil.rmtree(root, ignore_errors=True)
    pargs=["--sync-standbys",str(sync)] if sync else []
    p,phttp,pbin=start("serve","primary",pargs)
    s=None
    if standby:
        s,shttp,sbin=start("standby","standby",["--primary",pbin])
        while not get(phttp,"/v1/status")["standbys"]: time.sleep(0.05)
    samples=[]; flag=threading.Event(); t=threading.Thread(target=sampler,args=(phttp,samples,flag)); t.start()
    out=load(pbin, workload, clients, True)
    flag.set(); t.join()
    print(f"=== {label}: {workload} clients={clients} sync={sync} standby={standby}")
    print(out.strip())
    if samples:
        recs=[x[0] for x in samples]; ms=[x[2] for x in samples]; by=[x[1] for x in samples]
        q=lambda v,f: sorted(v)[min(len(v)-1,int(len(v)*f))]
        print(f"lag samples={len(samples)} records p50={q(recs,.5)} p99={q(recs,.99)} max={max(recs)}; ms p50={q(ms,.5)} p99={q(ms,.99)} max={max(ms)}; bytes p50={q(by,.5)} max={max(by)}")
    res=None
    if standby and "--promote" in sys.argv:
        # the standby catches up, the primary stops, then: promote -> first accepted write
        time.sleep(1); stop(p)
        t0=time.monotonic()
        r=subprocess.run([B,"promote","--http",shttp],capture_output=True,text=True)
        t1=time.monotonic()
        st=post(shttp,"/v1/partitions/promo/resources/r",'{"capacity":1}')
        t2=time.monotonic()
        print(f"promote exit={r.returncode} out={r.stdout.strip()} command={1000*(t1-t0):.1f} ms; to first accepted write ({st}) {1000*(t2-t0):.1f} ms; node's own {get(shttp,'/v1/status').get('last_promotion_ms')} ms")
        stop(s)
    else:
        if s: stop(s)
        stop(p)
for spec in sys.argv[1:]:
    if spec.startswith("--"): continue
    w,c,k,sb=spec.split(":")
    run(spec,w,int(c),int(k),sb=="1")
