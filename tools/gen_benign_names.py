#!/usr/bin/env python3
"""Generate tests/fixtures/benign_names.txt: names that agents and hosts really resolve.

    python3 tools/gen_benign_names.py > tests/fixtures/benign_names.txt

The detector's false-positive test replays this file from many simulated clients and expects no
alert. Every name follows the pattern of a real public service, written down by hand from the
services' own documentation and from what their clients are seen to resolve: package
registries, model APIs, cloud and CDN host names (with the random-looking tokens those use:
CloudFront distribution ids, ELB names, S3 buckets, Akamai edge numbers), antivirus hash lookups,
DNSBL reversed-IP queries, DKIM selectors, reverse DNS, telemetry endpoints, Kubernetes service
names. Random parts (tokens, IPs, hashes) come from a seeded PRNG, so the output is stable.
This file is the TEST corpus and is kept apart from the n-gram TRAINING corpus
(tools/ngram_corpus.txt); tools/train_ngram.py drops any name found here.
"""
import random

R = random.Random(20260525)
out = []


def add(name, qtype="A"):
    out.append(f"{name} {qtype}")


def tok(n, alphabet="abcdefghijklmnopqrstuvwxyz0123456789"):
    return "".join(R.choice(alphabet) for _ in range(n))


HEX = "0123456789abcdef"
REGIONS = ["us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-west-2",
           "eu-central-1", "ap-southeast-1", "ap-southeast-2", "ap-northeast-1", "ca-central-1",
           "sa-east-1", "ap-south-1", "eu-north-1"]
WORDS = ["prod", "staging", "dev", "data", "assets", "media", "static", "backup", "logs", "ml",
         "models", "artifacts", "build", "cache", "images", "reports", "exports", "uploads",
         "team", "analytics", "warehouse", "lake", "raw", "public", "internal", "web", "app",
         "api", "agent", "fleet", "runner", "ci", "datasets", "checkpoints", "eval", "train"]
ORGS = ["acme", "globex", "initech", "umbrella", "hooli", "piedpiper", "stark", "wayne",
        "wonka", "cyberdyne", "tyrell", "soylent", "aperture", "blackmesa", "vandelay",
        "dunder", "massive", "oscorp", "gringotts", "nakatomi"]

# Developer infrastructure: package registries, source hosting, containers.
DEV = """pypi.org files.pythonhosted.org upload.pypi.org test.pypi.org registry.npmjs.org
registry.yarnpkg.com npmjs.com www.npmjs.com crates.io static.crates.io index.crates.io
static.rust-lang.org doc.rust-lang.org docs.rs deb.debian.org security.debian.org
ftp.debian.org archive.ubuntu.com security.ubuntu.com ports.ubuntu.com ppa.launchpadcontent.net
ghcr.io pkg-containers.githubusercontent.com registry-1.docker.io auth.docker.io index.docker.io
production.cloudflare.docker.com hub.docker.com github.com api.github.com codeload.github.com
objects.githubusercontent.com raw.githubusercontent.com uploads.github.com
release-assets.githubusercontent.com avatars.githubusercontent.com gist.github.com
proxy.golang.org sum.golang.org go.dev golang.org storage.googleapis.com repo.maven.apache.org
repo1.maven.org plugins.gradle.org services.gradle.org rubygems.org index.rubygems.org
nodejs.org registry.terraform.io releases.hashicorp.com apt.releases.hashicorp.com
download.docker.com quay.io cdn01.quay.io gcr.io us-docker.pkg.dev europe-docker.pkg.dev
mcr.microsoft.com packages.microsoft.com gitlab.com registry.gitlab.com bitbucket.org
dl.google.com dl-ssl.google.com conda.anaconda.org repo.anaconda.com pypi.nvidia.com
developer.download.nvidia.com download.pytorch.org github.githubassets.com
api.nuget.org www.nuget.org packagist.org repo.packagist.org cdn.jsdelivr.net unpkg.com
cdnjs.cloudflare.com esm.sh deno.land jsr.io bun.sh get.helm.sh charts.bitnami.com
alpine.global.ssl.fastly.net dl-cdn.alpinelinux.org mirrors.fedoraproject.org
download.fedoraproject.org mirror.centos.org cache.nixos.org channels.nixos.org
sh.rustup.rs static.pepy.tech readthedocs.org docs.python.org www.python.org
stackoverflow.com api.stackexchange.com sqlite.org www.postgresql.org""".split()
for n in DEV:
    add(n)
    add(n, "AAAA")

# Model and AI APIs.
AI = """api.openai.com api.anthropic.com generativelanguage.googleapis.com huggingface.co
cdn-lfs.huggingface.co cdn-lfs-us-1.huggingface.co cdn-lfs.hf.co cdn-lfs-us-1.hf.co
cas-bridge.xethub.hf.co transfer.xethub.hf.co api-inference.huggingface.co
router.huggingface.co datasets-server.huggingface.co api.mistral.ai api.cohere.com
api.cohere.ai api.groq.com api.together.xyz api.together.ai openrouter.ai api.deepseek.com
api.perplexity.ai api.fireworks.ai api.replicate.com replicate.delivery api.x.ai
aiplatform.googleapis.com oauth2.googleapis.com www.googleapis.com api.voyageai.com
api.pinecone.io api.elevenlabs.io statsig.anthropic.com console.anthropic.com
platform.openai.com chatgpt.com cdn.openai.com files.oaiusercontent.com
api.langchain.com api.smith.langchain.com api.wandb.ai storage.googleapis.com
api.tavily.com api.search.brave.com serpapi.com api.exa.ai r.jina.ai s.jina.ai""".split()
for n in AI:
    add(n)
    add(n, "AAAA")
for r in ["us-central1", "europe-west4", "us-east4", "asia-northeast1", "us-west1"]:
    add(f"{r}-aiplatform.googleapis.com")
for r in REGIONS[:8]:
    add(f"bedrock-runtime.{r}.amazonaws.com")
    add(f"bedrock.{r}.amazonaws.com")
    add(f"sts.{r}.amazonaws.com")
    add(f"runtime.sagemaker.{r}.amazonaws.com")
for org in ORGS:
    for loc in ["eastus", "eastus2", "westeurope", "swedencentral", "northcentralus"]:
        add(f"{org}-{loc}.openai.azure.com")
    add(f"{org}.cognitiveservices.azure.com")
    add(f"{org}-search.search.windows.net")
    add(f"{tok(8, 'abcdefghijklmnopqrstuvwxyz')}.pinecone.io") if False else None
    add(f"{org}-{tok(7, 'abcdefghijklmnopqrstuvwxyz0123456789')}.svc.aped-4627-b74a.pinecone.io")

# Cloud and CDN host names with the random-looking tokens they really use.
for _ in range(400):
    add(f"d{tok(13, 'abcdefghijklmnopqrstuvwxyz0123456789')}.cloudfront.net")
for _ in range(250):
    org, w = R.choice(ORGS), R.choice(WORDS)
    b = R.choice([f"{org}-{w}", f"{org}-{w}-{R.choice(REGIONS)}", f"{w}.{org}.com",
                  f"{org}-{w}-{tok(6, HEX)}", f"{org}{w}{R.randint(1, 99)}"])
    r = R.choice(REGIONS)
    add(R.choice([f"{b}.s3.amazonaws.com", f"{b}.s3.{r}.amazonaws.com",
                  f"{b}.s3.dualstack.{r}.amazonaws.com", f"s3.{r}.amazonaws.com"]))
for _ in range(200):
    org, w, r = R.choice(ORGS), R.choice(WORDS), R.choice(REGIONS)
    name = f"{org}-{w}-{R.choice(['alb', 'nlb', 'lb', 'ingress'])}"[:32]
    num = R.randint(10**8, 10**10 - 1)
    add(R.choice([f"{name}-{num}.{r}.elb.amazonaws.com",
                  f"internal-{name}-{num}.{r}.elb.amazonaws.com",
                  f"{name}-{tok(16, HEX)}.elb.{r}.amazonaws.com"]))
for _ in range(150):
    r = R.choice(REGIONS)
    ip = "-".join(str(R.randint(1, 254)) for _ in range(4))
    add(R.choice([f"ec2-{ip}.{r}.compute.amazonaws.com", f"ec2-{ip}.compute-1.amazonaws.com",
                  f"{tok(10, 'abcdefghijklmnopqrstuvwxyz0123456789')}.execute-api.{r}.amazonaws.com",
                  f"{tok(14, 'abcdefghijklmnopqrstuvwxyz0123456789')}-ats.iot.{r}.amazonaws.com",
                  f"{R.choice(ORGS)}-{R.choice(WORDS)}.{tok(6, 'abcdefghijklmnopqrstuvwxyz0123456789')}.{r}.rds.amazonaws.com",
                  f"sqs.{r}.amazonaws.com", f"logs.{r}.amazonaws.com", f"ecr.{r}.amazonaws.com",
                  f"{R.randint(10**11, 10**12 - 1)}.dkr.ecr.{r}.amazonaws.com"]))
for _ in range(200):
    acct = f"{R.choice(ORGS)}{R.choice(WORDS)}{tok(R.choice([0, 4, 6]), 'abcdefghijklmnopqrstuvwxyz0123456789')}"[:24]
    add(R.choice([f"{acct}.blob.core.windows.net", f"{acct}.dfs.core.windows.net",
                  f"{acct}.queue.core.windows.net", f"{acct}.table.core.windows.net",
                  f"{acct}.file.core.windows.net"]))
for _ in range(250):
    add(R.choice([f"e{R.randint(1, 99999)}.a.akamaiedge.net", f"e{R.randint(1, 9999)}.dscx.akamaiedge.net",
                  f"e{R.randint(1, 99999)}.b.akamaiedge.net", f"e{R.randint(1, 9999)}.g.akamaiedge.net",
                  f"a{R.randint(1, 9999)}.dscd.akamai.net", f"a{R.randint(100, 1999)}.w10.akamai.net"]))
SITES = """www.apple.com www.microsoft.com www.office.com login.live.com www.adobe.com
www.nvidia.com www.intel.com www.oracle.com www.ibm.com www.salesforce.com www.sap.com
www.paypal.com www.ebay.com www.booking.com www.airbnb.com www.nike.com www.target.com
www.walmart.com www.bestbuy.com www.homedepot.com www.costco.com www.bbc.co.uk www.cnn.com
www.nytimes.com www.theguardian.com www.reuters.com www.bloomberg.com www.wsj.com
www.forbes.com www.espn.com www.imdb.com www.netflix.com www.spotify.com www.hulu.com
www.dropbox.com www.box.com www.zoom.us www.slack.com www.atlassian.com www.notion.so
www.figma.com www.canva.com www.shopify.com www.stripe.com www.twilio.com www.cloudflare.com
www.fastly.com www.akamai.com www.digitalocean.com www.linode.com www.heroku.com""".split()
for s in SITES:
    add(f"{s}.edgekey.net", "CNAME")
    add(f"{s}.edgesuite.net", "CNAME")
for _ in range(60):
    add(f"{tok(R.choice([8, 10, 12]), 'abcdefghijklmnopqrstuvwxyz')}.azureedge.net")
    add(f"{R.choice(ORGS)}-{R.choice(WORDS)}-{tok(16, 'abcdefghijklmnopqrstuvwxyz0123456789')}.z01.azurefd.net")
GOOGLE = """fonts.googleapis.com fonts.gstatic.com www.gstatic.com ssl.gstatic.com
maps.googleapis.com www.google.com accounts.google.com apis.google.com
clients1.google.com clients2.google.com clients4.google.com update.googleapis.com
content-autofill.googleapis.com safebrowsing.googleapis.com play.googleapis.com
lh3.googleusercontent.com lh4.googleusercontent.com drive.google.com docs.google.com
sheets.googleapis.com firestore.googleapis.com pubsub.googleapis.com bigquery.googleapis.com
cloudresourcemanager.googleapis.com iamcredentials.googleapis.com logging.googleapis.com
monitoring.googleapis.com secretmanager.googleapis.com artifactregistry.googleapis.com
compute.googleapis.com container.googleapis.com run.googleapis.com youtube.com
www.youtube.com i.ytimg.com yt3.ggpht.com time.google.com dns.google""".split()
for n in GOOGLE:
    add(n)
    add(n, "AAAA")
for _ in range(80):
    add(f"rr{R.randint(1, 8)}---sn-{tok(8, 'abcdefghijklmnopqrstuvwxyz0123456789')}.googlevideo.com")
for _ in range(60):
    add(f"{tok(R.choice([12, 16, 20]), 'abcdefghijklmnopqrstuvwxyz')}.supabase.co")
    add(f"{R.choice(ORGS)}-{R.choice(WORDS)}-default-rtdb.firebaseio.com")
    add(f"o{R.randint(10**5, 10**7)}.ingest.sentry.io")
    add(f"o{R.randint(4 * 10**15, 5 * 10**15)}.ingest.us.sentry.io")

# Telemetry, SaaS, OS services.
SAAS = """browser-intake-datadoghq.com http-intake.logs.datadoghq.com api.datadoghq.com
trace.agent.datadoghq.com app.datadoghq.eu api.segment.io cdn.segment.com api.mixpanel.com
api2.amplitude.com api.honeycomb.io us.i.posthog.com eu.i.posthog.com app.posthog.com
otlp.nr-data.net collector.newrelic.com hooks.slack.com slack.com edgeapi.slack.com
wss-primary.slack.com api.stripe.com js.stripe.com m.stripe.network api.twilio.com
api.sendgrid.com smtp.sendgrid.net api.mailgun.net login.microsoftonline.com
graph.microsoft.com management.azure.com login.windows.net settings-win.data.microsoft.com
v10.events.data.microsoft.com ctldl.windowsupdate.com fe2.update.microsoft.com
gsp-ssl.ls.apple.com mesu.apple.com swscan.apple.com gateway.icloud.com
time.apple.com time.windows.com ocsp.digicert.com ocsp.pki.goog crl.pki.goog
r3.o.lencr.org x1.c.lencr.org acme-v02.api.letsencrypt.org ocsp.sectigo.com
spclient.wg.spotify.com apresolve.spotify.com api.spotify.com
audio-ak-spotify-com.akamaized.net i.scdn.co api.atlassian.com auth.atlassian.com
api.notion.com api.linear.app api.zoom.us zoom.us api.dropboxapi.com content.dropboxapi.com
api.box.com oauth2.googleapis.com sts.amazonaws.com iam.amazonaws.com
api.cloudflare.com one.one.one.one cloudflare-dns.com checkip.amazonaws.com
ifconfig.me api.ipify.org ipinfo.io""".split()
for n in SAAS:
    add(n)
    add(n, "AAAA")
for i in range(4):
    for p in ["debian", "ubuntu", "centos", "fedora", "arch"]:
        add(f"{i}.{p}.pool.ntp.org")
for org in ORGS:
    add(f"{org}.slack.com")
    add(f"{org}.atlassian.net")
    add(f"{org}.okta.com")
    add(f"{org}.my.salesforce.com")
    add(f"{org}.zendesk.com")
    add(f"{org}.sharepoint.com")
    add(f"{org}-my.sharepoint.com")
    add(f"{org}.ghe.com")

# Kubernetes and cloud-internal names.
SVC = ["api", "web", "redis-master", "postgres", "kafka", "zookeeper", "vector", "otel-collector",
       "prometheus", "grafana", "loki", "tempo", "vault", "consul", "minio", "qdrant", "milvus",
       "ollama", "vllm", "triton", "embedder", "reranker", "gateway", "auth", "billing"]
NS = ["default", "kube-system", "monitoring", "agents", "ml", "data", "ingress-nginx", "prod"]
for s in SVC:
    for ns in NS:
        add(f"{s}.{ns}.svc.cluster.local")
    add(f"{s}-0.{s}-headless.{R.choice(NS)}.svc.cluster.local")
add("kubernetes.default.svc.cluster.local")
add("kube-dns.kube-system.svc.cluster.local")
for _ in range(120):
    a, b, c = R.randint(0, 255), R.randint(0, 255), R.randint(1, 254)
    add(R.choice([f"ip-10-{a}-{b}-{c}.ec2.internal", f"ip-172-{R.randint(16, 31)}-{b}-{c}.{R.choice(REGIONS)}.compute.internal",
                  f"{R.choice(ORGS)}-{R.choice(SVC)}-{tok(10, 'bcdfghjklmnpqrstvwxz2456789')}-{tok(5, 'bcdfghjklmnpqrstvwxz2456789')}.{R.choice(NS)}.pod.cluster.local"]))

# Antivirus / reputation lookups (hashes in the name, by design).
for _ in range(250):
    add(R.choice([f"{tok(32, HEX)}.{R.randint(0, 3)}.f.01.sophosxl.net",
                  f"{'.'.join(tok(1, HEX) for _ in range(8))}.{tok(24, HEX)}.sxl.sophosxl.net",
                  f"0.0.0.0.1.0.0.4e.{tok(26, 'abcdefghijklmnopqrstuvwxyz234567')}.avqs.mcafee.com",
                  f"0.0.0.0.1.0.0.4e.{tok(26, 'abcdefghijklmnopqrstuvwxyz234567')}.avts.mcafee.com",
                  f"{tok(40, HEX)}.{R.randint(1, 9)}.e5.sk"]), R.choice(["A", "A", "TXT"]))

# DNS blocklists, queried by reversed IPv4 address and by domain.
for _ in range(300):
    ip = ".".join(str(R.randint(1, 254)) for _ in range(4))
    zone = R.choice(["zen.spamhaus.org", "zen.spamhaus.org", "b.barracudacentral.org",
                     "bl.spamcop.net", "dnsbl.sorbs.net", "psbl.surriel.com"])
    add(f"{ip}.{zone}", R.choice(["A", "TXT"]))
for _ in range(60):
    dom = f"{R.choice(WORDS)}{R.choice(ORGS)}.{R.choice(['com', 'net', 'org', 'io'])}"
    add(f"{dom}.dbl.spamhaus.org")
    add(f"{dom}.multi.uribl.com")
    add(f"{dom}.multi.surbl.org")

# Mail: DKIM selectors, DMARC, SPF and MX.
MAILDOMS = [f"{o}.com" for o in ORGS] + ["gmail.com", "outlook.com", "yahoo.com", "proton.me",
            "github.com", "stripe.com", "slack.com", "notion.so", "linear.app", "vercel.com"]
SELECTORS = ["google", "selector1", "selector2", "s1", "s2", "k1", "k2", "k3", "mandrill",
             "mailjet", "smtpapi", "dkim", "default", "mail", "20230601", "20210112", "pm",
             "sig1", "mxvault", "zendesk1", "zendesk2", "hs1", "hs2", "cm", "everlytickey1"]
for d in MAILDOMS:
    add(d, "MX")
    add(d, "TXT")
    add(f"_dmarc.{d}", "TXT")
    for s in R.sample(SELECTORS, 6):
        add(f"{s}._domainkey.{d}", "TXT")
    add(f"{d.split('.')[0]}-com.mail.protection.outlook.com")
    add(f"_mta-sts.{d}", "TXT")
    add(f"_smtp._tls.{d}", "TXT")
for d in MAILDOMS[:12]:
    add(f"{tok(32, HEX)}._domainkey.{d}", "TXT")  # Amazon SES style token selectors
    add(f"_acme-challenge.{d}", "TXT")

# Service discovery and other record types.
for d in MAILDOMS[:15]:
    add(f"_xmpp-server._tcp.{d}", "SRV")
    add(f"_sip._tls.{d}", "SRV")
    add(f"_imaps._tcp.{d}", "SRV")
    add(f"_submission._tcp.{d}", "SRV")
    add(f"_caldavs._tcp.{d}", "SRV")
    add(f"www.{d}", "HTTPS")
    add(d, "CAA")
    add(d, "NS")

# Reverse DNS (PTR), including the long IPv6 nibble names.
for _ in range(250):
    if R.random() < 0.6:
        add(".".join(str(R.randint(1, 254)) for _ in range(4)) + ".in-addr.arpa", "PTR")
    else:
        add(".".join(R.choice(HEX) for _ in range(32)) + ".ip6.arpa", "PTR")

# Popular sites and their common subdomains (what a browsing agent resolves).
POP = """google.com youtube.com facebook.com wikipedia.org amazon.com reddit.com twitter.com x.com
instagram.com linkedin.com bing.com yahoo.com duckduckgo.com microsoft.com apple.com
github.com stackoverflow.com medium.com substack.com arxiv.org nature.com sciencedirect.com
springer.com ieee.org acm.org nih.gov ncbi.nlm.nih.gov who.int cdc.gov europa.eu gov.uk
bbc.com nytimes.com washingtonpost.com theguardian.com reuters.com apnews.com bloomberg.com
ft.com economist.com wired.com arstechnica.com theverge.com techcrunch.com
news.ycombinator.com producthunt.com npmjs.com pypi.org kaggle.com paperswithcode.com
openreview.net semanticscholar.org scholar.google.com researchgate.net jstor.org
mozilla.org w3.org whatwg.org ietf.org rfc-editor.org iana.org icann.org
cloudflare.com vercel.com netlify.com heroku.com render.com fly.io railway.app
digitalocean.com linode.com vultr.com hetzner.com ovh.com scaleway.com oracle.com ibm.com
salesforce.com atlassian.com notion.so figma.com canva.com miro.com airtable.com
zapier.com hubspot.com mailchimp.com intercom.com zendesk.com freshworks.com
shopify.com stripe.com paypal.com squareup.com wise.com revolut.com
booking.com expedia.com tripadvisor.com airbnb.com uber.com lyft.com doordash.com
ebay.com etsy.com walmart.com target.com bestbuy.com ikea.com zara.com nike.com
imdb.com netflix.com spotify.com twitch.tv discord.com telegram.org whatsapp.com
zoom.us webex.com teams.microsoft.com office.com live.com outlook.com
weather.com accuweather.com timeanddate.com wolframalpha.com mathworks.com
python.org rust-lang.org golang.org nodejs.org kotlinlang.org swift.org ruby-lang.org
docker.com kubernetes.io helm.sh terraform.io ansible.com jenkins.io circleci.com
travis-ci.com gitlab.com bitbucket.org sourceforge.net launchpad.net savannah.gnu.org
kernel.org debian.org ubuntu.com fedoraproject.org archlinux.org gentoo.org
openssl.org letsencrypt.org owasp.org cve.org nvd.nist.gov first.org mitre.org""".split()
SUBS = ["www", "api", "docs", "cdn", "static", "assets", "m", "blog", "help", "support",
        "status", "auth", "login", "accounts", "app", "dev", "developer", "developers",
        "images", "img", "media", "news", "mail", "search", "store", "shop", "community",
        "forum", "wiki", "download", "downloads", "files", "data", "en", "de", "fr", "es",
        "ja", "uploads", "video", "edge", "gateway", "events", "metrics", "telemetry", "v2"]
for d in POP:
    add(d)
    add(d, "AAAA")
    for s in R.sample(SUBS, 8):
        add(f"{s}.{d}", R.choice(["A", "A", "AAAA", "HTTPS"]))
for d in POP[:40]:
    add(f"en.m.{d}")
    add(f"static-assets-{R.randint(1, 9)}.{d}")
    add(f"{R.choice(['us', 'eu', 'ap'])}-{R.choice(['east', 'west', 'central'])}-{R.randint(1, 3)}.api.{d}")

seen = set()
print("# Benign DNS names for dnsward's false-positive test: one `name QTYPE` per line;")
print("# lines starting with # are comments. Generated by tools/gen_benign_names.py (seeded),")
print("# from the patterns of real public services; see that script for the sources and categories.")
for line in out:
    if line not in seen:
        seen.add(line)
        print(line)
