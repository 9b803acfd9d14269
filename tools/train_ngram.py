#!/usr/bin/env python3
"""Build the hostname corpus and train dnsward's character trigram model (run offline).

The tunnel detector (src/detect/ngram.rs) scores how "hostname-like" a label is by its average
cost, in bits per character, under a character trigram model of ordinary hostnames (Born and
Gustafson's idea). This script makes that model. It is never run by the build.

    python3 tools/train_ngram.py collect   # writes tools/ngram_corpus.txt (shipped)
    python3 tools/train_ngram.py train     # writes src/detect/ngram_costs.bin (shipped)

Corpus provenance (`collect`), all from packages installed on a Debian machine, no network:
  * host names of every http(s) URL found in the text of installed packages: Debian's
    /usr/share/doc and /usr/lib/python3, the PyPI site-packages of the Python in PATH (botocore,
    boto3, awscli, ...), and the crates.io sources in ~/.cargo/registry/src. These are real,
    public host names that software links to (docs.rs, wiki.debian.org, cdn.example.net ...).
  * the Debian package `publicsuffix` (/usr/share/publicsuffix/public_suffix_list.dat): its
    private section lists thousands of real hosting and cloud provider domains.
  * botocore's endpoints.json (PyPI package `botocore`): the service host names of AWS.
Names in tests/fixtures/benign_names.txt (the benign TEST corpus) are removed, so the model is
never tested on its own training names.

Model (`train`): symbols are `^` (label boundary), a-z, 0-9, `-`, `_` and one "other" symbol:
40 in all. Each label is padded as `^^label^`; P(c | a b) interpolates trigram, bigram and
add-one unigram estimates (0.6 / 0.3 / 0.1). The table holds -log2 P quantised to 1/16 bit,
one byte per (a, b, c), index a*1600 + b*40 + c: 64,000 bytes.
"""
import json
import math
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "ngram_corpus.txt")
TABLE = os.path.join(ROOT, "src", "detect", "ngram_costs.bin")
BENIGN = os.path.join(ROOT, "tests", "fixtures", "benign_names.txt")

URL = re.compile(rb"https?://([a-z0-9][a-z0-9.-]{1,200}\.[a-z]{2,24})(?=[/:\"'\s)>\]<,;])", re.I)
HOST = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)+$")
V = 40
SCALE = 16


def sym(ch):
    if ch == "^":
        return 0
    if "a" <= ch <= "z":
        return 1 + ord(ch) - ord("a")
    if "0" <= ch <= "9":
        return 27 + ord(ch) - ord("0")
    if ch == "-":
        return 37
    if ch == "_":
        return 38
    return 39


def collect():
    import glob

    hosts = set()
    roots = ["/usr/share/doc", "/usr/lib/python3", os.path.expanduser("~/.cargo/registry/src")]
    try:
        import botocore

        site = os.path.dirname(os.path.dirname(botocore.__file__))
        roots.append(site)
    except ImportError:
        site = None
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for f in files:
                p = os.path.join(dirpath, f)
                try:
                    if os.path.getsize(p) > 4_000_000:
                        continue
                    data = open(p, "rb").read()
                except OSError:
                    continue
                for m in URL.finditer(data):
                    hosts.add(m.group(1).decode("ascii", "replace").lower().strip("."))
    psl = "/usr/share/publicsuffix/public_suffix_list.dat"
    if os.path.exists(psl):
        for line in open(psl, encoding="utf-8"):
            line = line.strip().lstrip("*.!")
            if line and not line.startswith("//") and line.isascii():
                hosts.add(line.lower())
    if site:
        ep = os.path.join(site, "botocore", "data", "endpoints.json")
        if os.path.exists(ep):
            text = open(ep, encoding="utf-8").read()
            for m in re.finditer(r'"hostname"\s*:\s*"([^"]+)"', text):
                h = m.group(1).lower()
                if "{" not in h:
                    hosts.add(h)
            # each service prefix and each region name once (not their product, which would
            # drown the corpus in AWS region names)
            doc = json.loads(text)
            for part in doc.get("partitions", []):
                dns = part.get("dnsSuffix", "amazonaws.com")
                for svc, body in part.get("services", {}).items():
                    hosts.add(f"{svc}.{dns}".lower())
                    for region in body.get("endpoints", {}):
                        hosts.add(f"{region}.{dns}".lower())
    hosts = sorted(h for h in hosts if HOST.match(h) and len(h) <= 253)
    with open(CORPUS, "w", encoding="ascii") as out:
        out.write("# Hostname corpus for tools/train_ngram.py; see that script for provenance.\n")
        for h in hosts:
            out.write(h + "\n")
    print(f"{len(hosts)} host names -> {CORPUS}")


def labels_of(host):
    parts = host.split(".")
    # drop the TLD: it is a fixed vocabulary, not what the detector scores
    return [p for p in parts[:-1] if p]


def train():
    benign = set()
    if os.path.exists(BENIGN):
        for line in open(BENIGN, encoding="ascii"):
            if line.strip() and not line.startswith("#"):
                benign.add(line.split()[0])
    tri = [0] * (V * V * V)
    bi = [0] * (V * V)
    uni = [0] * V
    hosts = 0
    for line in open(CORPUS, encoding="ascii"):
        h = line.strip()
        if not h or h.startswith("#") or h in benign:
            continue
        hosts += 1
        for label in labels_of(h):
            s = [0, 0] + [sym(c) for c in label] + [0]
            for i in range(2, len(s)):
                a, b, c = s[i - 2], s[i - 1], s[i]
                tri[(a * V + b) * V + c] += 1
                bi[b * V + c] += 1
                uni[c] += 1
    n = sum(uni)
    ctx2 = [sum(tri[(a * V + b) * V : (a * V + b) * V + V]) for a in range(V) for b in range(V)]
    ctx1 = [sum(bi[b * V : b * V + V]) for b in range(V)]
    table = bytearray(V * V * V)
    for a in range(V):
        for b in range(V):
            for c in range(V):
                p1 = (uni[c] + 1) / (n + V)
                p2 = bi[b * V + c] / ctx1[b] if ctx1[b] else p1
                t = ctx2[a * V + b]
                p3 = tri[(a * V + b) * V + c] / t if t else p2
                p = 0.6 * p3 + 0.3 * p2 + 0.1 * p1
                cost = min(255, round(-math.log2(p) * SCALE))
                table[(a * V + b) * V + c] = cost
    with open(TABLE, "wb") as out:
        out.write(bytes(table))
    print(f"trained on {hosts} host names, {n} characters -> {TABLE}")


if __name__ == "__main__":
    {"collect": collect, "train": train}.get(sys.argv[1] if len(sys.argv) > 1 else "", lambda: sys.exit(__doc__))()
