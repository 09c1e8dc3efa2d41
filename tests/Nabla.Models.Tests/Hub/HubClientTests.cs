using System.Net;
using System.Text;
using Xunit;

namespace Nabla.Models.Tests.Hub;

/// <summary>The hub client against a real HTTP server on 127.0.0.1 that serves the hub's URL layout.</summary>
public sealed class HubClientTests : IDisposable
{
    const string Repo = "org/tiny";
    const string C1 = "1111111111111111111111111111111111111111";
    const string C2 = "2222222222222222222222222222222222222222";

    readonly string temp = Path.Combine(Path.GetTempPath(), "nabla-hub-" + Guid.NewGuid().ToString("N"));
    readonly FakeHubServer server;
    readonly byte[] weights;

    public HubClientTests()
    {
        server = new FakeHubServer(Path.Combine(temp, "server"));
        var rng = new Random(42);
        weights = new byte[300_000];
        rng.NextBytes(weights);
        server.AddFile(Repo, C1, "config.json", "{\"v\": 1}"u8.ToArray());
        server.AddFile(Repo, C1, "model.safetensors", weights);
        server.AddFile(Repo, C2, "config.json", "{\"v\": 2}"u8.ToArray());
        server.AddFile(Repo, C2, "model.safetensors", weights);
        server.AddFile(Repo, C2, "README.md", "# tiny\n"u8.ToArray());
        server.AddFile(Repo, C2, "tokenizer/vocab.txt", "[PAD]\n[UNK]\nhello\n"u8.ToArray());
        server.Branches[Repo + "@main"] = C2;
        server.Branches[Repo + "@v1"] = C1;
    }

    public void Dispose()
    {
        server.Dispose();
        try
        {
            Directory.Delete(temp, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    string CacheDir => Path.Combine(temp, "cache");

    HubClient Client(Action<HubOptions>? _ = null, string? token = null, bool offline = false, int retries = 0, string? endpoint = null,
        double metadataTimeout = 5, List<HubProgress>? progress = null) =>
        new(new HubOptions
        {
            Endpoint = endpoint ?? server.Endpoint,
            CacheDir = CacheDir,
            Token = token,
            Offline = offline,
            Retries = retries,
            RetryDelay = TimeSpan.FromMilliseconds(10),
            MetadataTimeout = TimeSpan.FromSeconds(metadataTimeout),
            DownloadTimeout = TimeSpan.FromSeconds(5),
            Progress = progress is null ? null : p => { lock (progress) progress.Add(p); },
        });

    string RepoDir => Path.Combine(CacheDir, "models--org--tiny");

    static string[] Incompletes(string dir) =>
        Directory.Exists(dir) ? Directory.GetFiles(dir, "*.incomplete", SearchOption.AllDirectories) : [];

    [Fact]
    public void SnapshotDownload_WritesThePythonCacheLayout()
    {
        var progress = new List<HubProgress>();
        using var hub = Client(progress: progress);
        var snap = hub.SnapshotDownload(Repo);

        Assert.Equal(Path.Combine(RepoDir, "snapshots", C2), snap);
        Assert.Equal(C2, File.ReadAllText(Path.Combine(RepoDir, "refs", "main")));
        var blobs = Directory.GetFiles(Path.Combine(RepoDir, "blobs")).Select(f => Path.GetFileName(f)!).Order(StringComparer.Ordinal).ToList();
        var expectedBlobs = new[]
        {
            FakeHubServer.GitSha1("{\"v\": 2}"u8.ToArray()), FakeHubServer.GitSha1("# tiny\n"u8.ToArray()),
            FakeHubServer.GitSha1("[PAD]\n[UNK]\nhello\n"u8.ToArray()), FakeHubServer.Sha256Hex(weights),
        }.Order(StringComparer.Ordinal).ToList();
        Assert.Equal(expectedBlobs, blobs);

        // Relative symlinks, one more ../ per sub folder, as huggingface_hub makes them.
        var config = new FileInfo(Path.Combine(snap, "config.json"));
        Assert.Equal("../../blobs/" + FakeHubServer.GitSha1("{\"v\": 2}"u8.ToArray()), config.LinkTarget);
        var vocab = new FileInfo(Path.Combine(snap, "tokenizer", "vocab.txt"));
        Assert.Equal("../../../blobs/" + FakeHubServer.GitSha1("[PAD]\n[UNK]\nhello\n"u8.ToArray()), vocab.LinkTarget);
        var model = new FileInfo(Path.Combine(snap, "model.safetensors"));
        Assert.Equal("../../blobs/" + FakeHubServer.Sha256Hex(weights), model.LinkTarget);
        Assert.Equal(weights, File.ReadAllBytes(model.FullName));
        Assert.Equal("{\"v\": 2}", File.ReadAllText(config.FullName));
        Assert.Empty(Incompletes(RepoDir));

        // The LFS file went through the absolute redirect to the "CDN" host, which got no token.
        var cdn = server.TakeRequests().Where(r => r.Path.StartsWith("/cdn/", StringComparison.Ordinal)).ToList();
        Assert.Single(cdn);
        Assert.Equal("localhost:" + server.Port, cdn[0].Header("host"));

        var done = progress.Where(p => p.Completed).Select(p => p.Filename).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(new[] { "README.md", "config.json", "model.safetensors", "tokenizer/vocab.txt" }, done);
        Assert.Contains(progress, p => p.Filename == "model.safetensors" && !p.Completed && p.BytesDone == weights.Length && p.TotalBytes == weights.Length);
    }

    [Fact]
    public void SecondDownload_IsServedFromTheCache()
    {
        using var hub = Client();
        var first = hub.SnapshotDownload(Repo);
        server.TakeRequests();

        // By branch: one model-info request to learn the commit, no file request.
        var second = hub.SnapshotDownload(Repo);
        Assert.Equal(first, second);
        var seen = server.TakeRequests();
        Assert.Single(seen);
        Assert.StartsWith("/api/models/org/tiny/revision/main", seen[0].Path, StringComparison.Ordinal);

        // By commit: a file already in the snapshot needs no request at all.
        var path = hub.Download(Repo, "model.safetensors", C2);
        Assert.Equal(Path.Combine(first, "model.safetensors"), path);
        Assert.Empty(server.TakeRequests());

        // By branch, one file: a HEAD for freshness, no GET.
        hub.Download(Repo, "config.json");
        Assert.All(server.TakeRequests(), r => Assert.Equal("HEAD", r.Method));
    }

    [Fact]
    public void Offline_ResolvesFromTheCacheWithoutRequests()
    {
        string snap;
        using (var online = Client()) snap = online.SnapshotDownload(Repo);
        server.TakeRequests();

        using var hub = Client(offline: true);
        Assert.Equal(snap, hub.SnapshotDownload(Repo));
        Assert.Equal(Path.Combine(snap, "config.json"), hub.Download(Repo, "config.json"));
        Assert.Equal(Path.Combine(snap, "config.json"), hub.Download(Repo, "config.json", C2));
        Assert.Empty(server.TakeRequests());

        var e = Assert.Throws<HubException>(() => hub.Download(Repo, "missing.bin"));
        Assert.Equal(HubErrorKind.NotCached, e.Kind);
        Assert.Contains("HF_HUB_OFFLINE", e.Message);
        Assert.Contains("missing.bin", e.Message);
        var e2 = Assert.Throws<HubException>(() => hub.SnapshotDownload(Repo, "v1"));
        Assert.Equal(HubErrorKind.NotCached, e2.Kind);
        Assert.Empty(server.TakeRequests());
    }

    [Fact]
    public void Offline_EmptyCache_FailsClearly()
    {
        using var hub = Client(offline: true);
        var e = Assert.Throws<HubException>(() => hub.SnapshotDownload(Repo));
        Assert.Equal(HubErrorKind.NotCached, e.Kind);
        Assert.Contains("org/tiny", e.Message);
        Assert.Empty(server.TakeRequests());
    }

    [Fact]
    public void Unreachable_FallsBackToTheCache()
    {
        string snap;
        using (var online = Client()) snap = online.SnapshotDownload(Repo);
        // A port nothing listens on.
        var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        using var hub = Client(endpoint: $"http://127.0.0.1:{port}");
        Assert.Equal(snap, hub.SnapshotDownload(Repo));
        Assert.Equal(Path.Combine(snap, "config.json"), hub.Download(Repo, "config.json"));
        var e = Assert.Throws<HubException>(() => hub.Download(Repo, "config.json", "v1"));
        Assert.Equal(HubErrorKind.NotCached, e.Kind);
        Assert.IsType<HubException>(e.InnerException);
    }

    [Fact]
    public void Revision_ByBranchAndByCommit()
    {
        using var hub = Client();
        var byBranch = hub.Download(Repo, "config.json", "v1");
        Assert.Equal(Path.Combine(RepoDir, "snapshots", C1, "config.json"), byBranch);
        Assert.Equal("{\"v\": 1}", File.ReadAllText(byBranch));
        Assert.Equal(C1, File.ReadAllText(Path.Combine(RepoDir, "refs", "v1")));

        var byCommit = hub.Download(Repo, "config.json", C1);
        Assert.Equal(byBranch, byCommit);

        var snap = hub.SnapshotDownload(Repo, C1);
        Assert.Equal(Path.Combine(RepoDir, "snapshots", C1), snap);
        Assert.False(File.Exists(Path.Combine(RepoDir, "refs", C1)));
        Assert.Equal(weights, File.ReadAllBytes(Path.Combine(snap, "model.safetensors")));
        // Both commits share one blob for the unchanged weights.
        Assert.Single(Directory.GetFiles(Path.Combine(RepoDir, "blobs")), f => Path.GetFileName(f) == FakeHubServer.Sha256Hex(weights));
    }

    [Fact]
    public void IncludeGlobs_SelectFiles()
    {
        using var hub = Client();
        var snap = hub.SnapshotDownload(Repo, include: ["*.json"]);
        Assert.Equal(new[] { "config.json" }, Files(snap));

        var snap2 = hub.SnapshotDownload(Repo, include: ["tokenizer/", "*.md"]);
        Assert.Equal(new[] { "README.md", "config.json", "tokenizer/vocab.txt" }, Files(snap2));

        var snap3 = hub.SnapshotDownload(Repo, include: ["*"], exclude: ["*.safetensors"]);
        Assert.DoesNotContain("model.safetensors", Files(snap3));
        Assert.False(File.Exists(Path.Combine(RepoDir, "blobs", FakeHubServer.Sha256Hex(weights))));
    }

    static string[] Files(string dir) =>
        Directory.GetFiles(dir, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(dir, f).Replace('\\', '/')).Order(StringComparer.Ordinal).ToArray();

    [Fact]
    public void Token_IsSentToTheHubButNotToTheCdn()
    {
        server.PrivateRepos.Add(Repo);
        using var hub = Client(token: "hf_test_secret");
        var snap = hub.SnapshotDownload(Repo);
        Assert.Equal(weights, File.ReadAllBytes(Path.Combine(snap, "model.safetensors")));
        var seen = server.TakeRequests();
        Assert.All(seen.Where(r => !r.Path.StartsWith("/cdn/", StringComparison.Ordinal)), r => Assert.Equal("Bearer hf_test_secret", r.Header("authorization")));
        Assert.All(seen.Where(r => r.Path.StartsWith("/cdn/", StringComparison.Ordinal)), r => Assert.Null(r.Header("authorization")));
    }

    [Fact]
    public void NotFound_FileRepoAndRevision()
    {
        using var hub = Client();
        var file = Assert.Throws<HubException>(() => hub.Download(Repo, "nope.txt"));
        Assert.Equal(HubErrorKind.NotFound, file.Kind);
        Assert.Equal(HttpStatusCode.NotFound, file.StatusCode);
        Assert.Equal("EntryNotFound", file.ErrorCode);
        Assert.Equal(server.Endpoint + "/org/tiny/resolve/main/nope.txt", file.Url);
        Assert.Contains(file.Url!, file.Message);
        Assert.Contains("404", file.Message);

        var rev = Assert.Throws<HubException>(() => hub.SnapshotDownload(Repo, "no-such-branch"));
        Assert.Equal(HubErrorKind.NotFound, rev.Kind);
        Assert.Equal("RevisionNotFound", rev.ErrorCode);

        // The hub answers 401 RepoNotFound for a repo that does not exist (it could be private).
        var repo = Assert.Throws<HubException>(() => hub.SnapshotDownload("org/missing"));
        Assert.Equal(HubErrorKind.NotFound, repo.Kind);
        Assert.Equal(HttpStatusCode.Unauthorized, repo.StatusCode);
        Assert.Contains("HF_TOKEN", repo.Message);
        Assert.False(Directory.Exists(Path.Combine(CacheDir, "models--org--missing", "snapshots")));
    }

    [Fact]
    public void Unauthorized_PrivateGatedAndPlain401()
    {
        server.PrivateRepos.Add(Repo);
        using var hub = Client();
        var priv = Assert.Throws<HubException>(() => hub.Download(Repo, "config.json"));
        Assert.Equal(HttpStatusCode.Unauthorized, priv.StatusCode);
        Assert.Contains("HF_TOKEN", priv.Message);

        server.PrivateRepos.Clear();
        server.GatedRepos.Add(Repo);
        var gated = Assert.Throws<HubException>(() => hub.SnapshotDownload(Repo));
        Assert.Equal(HubErrorKind.Unauthorized, gated.Kind);
        Assert.Equal(HttpStatusCode.Forbidden, gated.StatusCode);
        Assert.Equal("GatedRepo", gated.ErrorCode);
        Assert.Contains("HF_TOKEN", gated.Message);

        server.GatedRepos.Clear();
        server.PlainUnauthorizedRepos.Add(Repo);
        var plain = Assert.Throws<HubException>(() => hub.Download(Repo, "config.json"));
        Assert.Equal(HubErrorKind.Unauthorized, plain.Kind);
        Assert.Contains("401", plain.Message);
        Assert.Contains("HF_TOKEN", plain.Message);

        using var withWrongToken = Client(token: "hf_wrong");
        var wrong = Assert.Throws<HubException>(() => withWrongToken.Download(Repo, "config.json"));
        Assert.Contains("refused", wrong.Message);
        Assert.Empty(Directory.Exists(RepoDir) ? Directory.GetFiles(RepoDir, "*", SearchOption.AllDirectories).Where(f => !f.Contains("/refs/")) : []);
    }

    [Fact]
    public void TruncatedTransfer_FailsThenResumesWithRange()
    {
        server.Faults[Repo + "/model.safetensors"] = Fault.TruncateOnce;
        using var hub = Client(retries: 0);
        var e = Assert.Throws<HubException>(() => hub.Download(Repo, "model.safetensors"));
        Assert.Equal(HubErrorKind.Network, e.Kind);
        Assert.Contains("truncated", e.Message);
        Assert.Contains("/cdn/", e.Url);
        var snapFile = Path.Combine(RepoDir, "snapshots", C2, "model.safetensors");
        var blob = Path.Combine(RepoDir, "blobs", FakeHubServer.Sha256Hex(weights));
        Assert.False(File.Exists(snapFile));
        Assert.False(File.Exists(blob));
        var partial = Assert.Single(Incompletes(RepoDir));
        long have = new FileInfo(partial).Length;
        Assert.Equal(weights.Length / 2, have);
        server.TakeRequests();

        var path = hub.Download(Repo, "model.safetensors");
        Assert.Equal(snapFile, path);
        Assert.Equal(weights, File.ReadAllBytes(path));
        Assert.Empty(Incompletes(RepoDir));
        var get = Assert.Single(server.TakeRequests(), r => r.Path.StartsWith("/cdn/", StringComparison.Ordinal));
        Assert.Equal($"bytes={have}-", get.Header("range"));
    }

    [Fact]
    public void TruncatedTransfer_IsResumedWithinOneCallWhenRetriesAllow()
    {
        server.Faults[Repo + "/config.json"] = Fault.TruncateOnce;
        using var hub = Client(retries: 2);
        var path = hub.Download(Repo, "config.json");
        Assert.Equal("{\"v\": 2}", File.ReadAllText(path));
        var gets = server.TakeRequests().Where(r => r.Method == "GET").ToList();
        Assert.Equal(2, gets.Count);
        Assert.Null(gets[0].Header("range"));
        Assert.Equal("bytes=4-", gets[1].Header("range"));
    }

    [Fact]
    public void DroppedConnection_FailsCleanlyThenSucceeds()
    {
        server.Faults[Repo + "/model.safetensors"] = Fault.DropOnce;
        using var hub = Client(retries: 0);
        var e = Assert.Throws<HubException>(() => hub.Download(Repo, "model.safetensors"));
        Assert.Equal(HubErrorKind.Network, e.Kind);
        Assert.NotNull(e.InnerException);
        Assert.DoesNotContain("truncated", e.Message);
        Assert.False(File.Exists(Path.Combine(RepoDir, "snapshots", C2, "model.safetensors")));
        Assert.False(File.Exists(Path.Combine(RepoDir, "blobs", FakeHubServer.Sha256Hex(weights))));

        var path = hub.Download(Repo, "model.safetensors");
        Assert.Equal(weights, File.ReadAllBytes(path));
        Assert.Empty(Incompletes(RepoDir));
    }

    [Fact]
    public void EmptyFile_IsDownloaded()
    {
        server.AddFile("org/empty", C1, ".gitkeep", []);
        server.AddFile("org/empty", C1, "weights.bin", []);
        server.Branches["org/empty@main"] = C1;
        using var hub = Client();
        var snap = hub.SnapshotDownload("org/empty");
        Assert.Empty(File.ReadAllBytes(Path.Combine(snap, ".gitkeep")));
        Assert.Empty(File.ReadAllBytes(Path.Combine(snap, "weights.bin")));
        Assert.Empty(Incompletes(Path.Combine(CacheDir, "models--org--empty")));
    }

    [Fact]
    public void DanglingSnapshotLink_IsRepaired()
    {
        using var hub = Client();
        var path = hub.Download(Repo, "model.safetensors", C2);
        File.Delete(Path.Combine(RepoDir, "blobs", FakeHubServer.Sha256Hex(weights)));
        Assert.Equal(path, hub.Download(Repo, "model.safetensors", C2));
        Assert.Equal(weights, File.ReadAllBytes(path));
    }

    [Fact]
    public void HashMismatch_LeavesNothingInTheCache()
    {
        server.Faults[Repo + "/model.safetensors"] = Fault.Corrupt;
        using var hub = Client(retries: 2);
        var e = Assert.Throws<HubException>(() => hub.Download(Repo, "model.safetensors"));
        Assert.Equal(HubErrorKind.Integrity, e.Kind);
        Assert.Contains("SHA-256", e.Message);
        Assert.Contains(FakeHubServer.Sha256Hex(weights), e.Message);
        Assert.False(File.Exists(Path.Combine(RepoDir, "snapshots", C2, "model.safetensors")));
        Assert.Empty(Directory.GetFiles(Path.Combine(RepoDir, "blobs")));
    }

    [Fact]
    public void SizeMismatch_LeavesNothingInTheCache()
    {
        server.Faults[Repo + "/model.safetensors"] = Fault.TooLong;
        using var hub = Client();
        var e = Assert.Throws<HubException>(() => hub.Download(Repo, "model.safetensors"));
        Assert.Equal(HubErrorKind.Integrity, e.Kind);
        Assert.Contains(weights.Length.ToString(), e.Message);
        Assert.Empty(Directory.GetFiles(Path.Combine(RepoDir, "blobs")));
        Assert.False(Directory.Exists(Path.Combine(RepoDir, "snapshots")) && Directory.GetFiles(Path.Combine(RepoDir, "snapshots"), "*", SearchOption.AllDirectories).Length > 0);
    }

    [Fact]
    public void SilentServer_TimesOut()
    {
        server.Faults[Repo + "/config.json"] = Fault.Hang;
        using var hub = new HubClient(new HubOptions
        {
            Endpoint = server.Endpoint, CacheDir = CacheDir, Retries = 0,
            MetadataTimeout = TimeSpan.FromSeconds(2), DownloadTimeout = TimeSpan.FromSeconds(1),
        });
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var e = Assert.Throws<HubException>(() => hub.Download(Repo, "config.json"));
        Assert.Equal(HubErrorKind.Network, e.Kind);
        Assert.Contains("timed out", e.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"took {clock.Elapsed}");
        Assert.Empty(Directory.GetFiles(Path.Combine(RepoDir, "blobs")));
    }

    [Fact]
    public void RenamedRepo_FollowsTheRelativeRedirect()
    {
        server.Renamed["org/old-name"] = Repo;
        using var hub = Client();
        var path = hub.Download("org/old-name", "config.json");
        Assert.Equal("{\"v\": 2}", File.ReadAllText(path));
        Assert.StartsWith(Path.Combine(CacheDir, "models--org--old-name"), path, StringComparison.Ordinal);
    }

    [Fact]
    public void InvalidNames_AreRejectedBeforeAnyRequest()
    {
        using var hub = Client();
        Assert.Throws<HubException>(() => hub.Download(Repo, "../escape.txt"));
        Assert.Throws<HubException>(() => hub.Download(Repo, "/etc/passwd"));
        Assert.Throws<ArgumentException>(() => hub.Download("../x", "config.json"));
        Assert.Throws<ArgumentException>(() => hub.Download(Repo, "config.json", "../../escape"));
        Assert.Empty(server.TakeRequests());
        var e = Assert.Throws<HubException>(() => HubClient.ParseRepoInfo(Encoding.UTF8.GetBytes($"{{\"sha\":\"{C1}\",\"siblings\":[{{\"rfilename\":\"a/../../x\"}}]}}"), "u"));
        Assert.Equal(HubErrorKind.Protocol, e.Kind);
    }

    [Fact]
    public void Urls_MatchHuggingFaceHub()
    {
        using var hub = new HubClient(new HubOptions { CacheDir = CacheDir });
        Assert.Equal("https://huggingface.co/gpt2/resolve/main/config.json", hub.ResolveUrl("gpt2", "config.json"));
        Assert.Equal("https://huggingface.co/org/m/resolve/refs%2Fpr%2F1/sub%20dir/a%2Bb.bin", hub.ResolveUrl("org/m", "sub dir/a+b.bin", "refs/pr/1"));
        Assert.Equal("https://huggingface.co/datasets/org/d/resolve/main/x.csv", hub.ResolveUrl("org/d", "x.csv", type: RepoType.Dataset));
        Assert.Equal("https://huggingface.co/api/models/org/m/revision/v1.0", hub.InfoUrl("org/m", "v1.0"));
        Assert.Equal("datasets--org--d", HubCache.RepoFolderName("org/d", RepoType.Dataset));
        Assert.Equal("abc", HubClient.NormalizeEtag("W/\"abc\""));
    }

    [Fact]
    public void Options_FromEnvironment()
    {
        var env = new Dictionary<string, string>
        {
            ["HF_ENDPOINT"] = "http://mirror.local:8080/",
            ["HF_HOME"] = "/tmp/hfhome",
            ["HF_TOKEN"] = "hf_abc",
            ["HF_HUB_OFFLINE"] = "yes",
            ["HF_HUB_DOWNLOAD_TIMEOUT"] = "30",
        };
        var o = HubOptions.FromEnvironment(k => env.TryGetValue(k, out var v) ? v : null);
        Assert.Equal("http://mirror.local:8080", o.Endpoint);
        Assert.Equal("/tmp/hfhome/hub", o.CacheDir);
        Assert.Equal("hf_abc", o.Token);
        Assert.True(o.Offline);
        Assert.Equal(TimeSpan.FromSeconds(30), o.DownloadTimeout);

        env["HF_HUB_CACHE"] = "/data/hub";
        env["HF_HUB_OFFLINE"] = "0";
        env.Remove("HF_TOKEN");
        env["HF_TOKEN_PATH"] = Path.Combine(temp, "token");
        Directory.CreateDirectory(temp);
        File.WriteAllText(env["HF_TOKEN_PATH"], "hf_from_file\n");
        o = HubOptions.FromEnvironment(k => env.TryGetValue(k, out var v) ? v : null);
        Assert.Equal("/data/hub", o.CacheDir);
        Assert.False(o.Offline);
        Assert.Equal("hf_from_file", o.Token);

        o = HubOptions.FromEnvironment(_ => null);
        Assert.Equal("https://huggingface.co", o.Endpoint);
        Assert.EndsWith(Path.Combine(".cache", "huggingface", "hub"), o.CacheDir, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("config.json", "*.json", true)]
    [InlineData("sub/config.json", "*.json", true)]
    [InlineData("model.safetensors", "*.json", false)]
    [InlineData("tokenizer/vocab.txt", "tokenizer/", true)]
    [InlineData("model-00001-of-00002.safetensors", "model-0000?-of-*.safetensors", true)]
    [InlineData("a.bin", "[ab].bin", true)]
    [InlineData("c.bin", "[!ab].bin", true)]
    [InlineData("a.bin", "[!ab].bin", false)]
    [InlineData("a+b(1).txt", "a+b(1).txt", true)]
    public void Glob_MatchesLikeFnmatch(string path, string pattern, bool expected) =>
        Assert.Equal(expected, Glob.IsMatch(path, pattern));
}
