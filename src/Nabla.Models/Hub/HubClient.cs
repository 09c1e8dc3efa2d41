using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json;

namespace Nabla.Models;

/// <summary>What a HEAD on a resolve URL says about a file.</summary>
/// <param name="Commit">X-Repo-Commit: the full commit hash the revision resolved to</param>
/// <param name="Etag">X-Linked-Etag (LFS: the sha256) else ETag (git blob sha1), unquoted</param>
/// <param name="Size">X-Linked-Size, else Content-Length of a non-redirect answer</param>
/// <param name="Location">where to GET the bytes: a redirect's Location (a CDN) or the resolve URL</param>
public sealed record HubFileMetadata(string Commit, string Etag, long? Size, string Location);

/// <summary>
/// Downloads files from a Hugging Face Hub (or a server with its URL layout) into the cache layout that Python's
/// huggingface_hub uses, so one cache serves both. See <see cref="HubOptions"/> for the environment it honours.
/// </summary>
public sealed class HubClient : IDisposable
{
    const int MaxRedirects = 10;
    const long MaxJsonBytes = 64L << 20;

    readonly HttpClient http;

    public HubOptions Options { get; }

    public HubCache Cache { get; }

    /// <param name="options">null reads them from the environment (<see cref="HubOptions.FromEnvironment"/>)</param>
    public HubClient(HubOptions? options = null)
    {
        Options = options ?? HubOptions.FromEnvironment();
        Cache = new HubCache(Options.CacheDir);
        var handler = new SocketsHttpHandler
        {
            // NOTE: redirects are followed by hand: the metadata request follows only relative ones (renamed repos), as
            // huggingface_hub does, and the token must not travel to another host.
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            ConnectTimeout = Options.MetadataTimeout > Options.DownloadTimeout ? Options.MetadataTimeout : Options.DownloadTimeout,
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
        };
        http = new HttpClient(handler, disposeHandler: true) { Timeout = Timeout.InfiniteTimeSpan };
        http.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("nabla", typeof(HubClient).Assembly.GetName().Version?.ToString() ?? "0"));
    }

    public void Dispose() => http.Dispose();

    /// <summary><c>{endpoint}/{prefix}{repo}/resolve/{revision}/{path}</c>, the revision encoded with no safe characters, the path keeping '/'.</summary>
    public string ResolveUrl(string repoId, string filename, string revision = "main", RepoType type = RepoType.Model) =>
        $"{Options.Endpoint.TrimEnd('/')}/{UrlPrefix(type)}{repoId}/resolve/{Uri.EscapeDataString(revision)}/{EncodePath(filename)}";

    /// <summary><c>{endpoint}/api/{models|datasets|spaces}/{repo}/revision/{revision}</c>.</summary>
    public string InfoUrl(string repoId, string revision = "main", RepoType type = RepoType.Model) =>
        $"{Options.Endpoint.TrimEnd('/')}/api/{ApiKind(type)}/{repoId}/revision/{Uri.EscapeDataString(revision)}";

    /// <summary>Downloads one file (or finds it in the cache) and returns its path under snapshots/&lt;commit&gt;/.</summary>
    public string Download(string repoId, string filename, string revision = "main", RepoType type = RepoType.Model, CancellationToken ct = default) =>
        DownloadAsync(repoId, filename, revision, type, ct).GetAwaiter().GetResult();

    /// <summary>Downloads the files of a revision matching the globs and returns the snapshot folder.</summary>
    public string SnapshotDownload(string repoId, string revision = "main", IEnumerable<string>? include = null, IEnumerable<string>? exclude = null,
        RepoType type = RepoType.Model, CancellationToken ct = default) =>
        SnapshotDownloadAsync(repoId, revision, include, exclude, type, ct).GetAwaiter().GetResult();

    /// <inheritdoc cref="Download"/>
    public async Task<string> DownloadAsync(string repoId, string filename, string revision = "main", RepoType type = RepoType.Model, CancellationToken ct = default)
    {
        HubCache.ValidateRepoId(repoId);
        HubCache.ValidateFilename(filename);
        if (string.IsNullOrEmpty(revision)) revision = "main";
        HubCache.ValidateRevision(revision);

        // A commit hash cannot move: a file already in its snapshot needs no request at all.
        if (HubCache.IsCommitHash(revision))
        {
            var cached = Cache.SnapshotPath(repoId, type, revision, filename);
            if (HubCache.FileExists(cached)) return cached;
        }
        if (Options.Offline) return FromCache(repoId, filename, revision, type, null);

        HubFileMetadata meta;
        try
        {
            meta = await GetMetadataAsync(ResolveUrl(repoId, filename, revision, type), ct).ConfigureAwait(false);
        }
        catch (HubException e) when (e.Kind == HubErrorKind.Network)
        {
            return FromCache(repoId, filename, revision, type, e);
        }

        Cache.WriteRef(repoId, type, revision, meta.Commit);
        var pointer = Cache.SnapshotPath(repoId, type, meta.Commit, filename);
        if (HubCache.FileExists(pointer)) return pointer;
        var blob = Cache.BlobPath(repoId, type, meta.Etag);
        if (!File.Exists(blob))
        {
            using var lockFile = await AcquireLockAsync(Cache.LockPath(repoId, type, meta.Etag), ct).ConfigureAwait(false);
            if (!File.Exists(blob)) await DownloadBlobAsync(repoId, filename, meta, blob, ct).ConfigureAwait(false);
        }
        var path = Cache.LinkSnapshot(repoId, type, meta.Commit, filename, meta.Etag);
        Options.Progress?.Invoke(new HubProgress(repoId, filename, new FileInfo(blob).Length, meta.Size, Completed: true));
        return path;
    }

    /// <inheritdoc cref="SnapshotDownload"/>
    public async Task<string> SnapshotDownloadAsync(string repoId, string revision = "main", IEnumerable<string>? include = null, IEnumerable<string>? exclude = null,
        RepoType type = RepoType.Model, CancellationToken ct = default)
    {
        HubCache.ValidateRepoId(repoId);
        if (string.IsNullOrEmpty(revision)) revision = "main";
        HubCache.ValidateRevision(revision);
        if (Options.Offline) return SnapshotFromCache(repoId, revision, type, null);

        var url = InfoUrl(repoId, revision, type);
        (string Commit, List<string> Files) info;
        try
        {
            info = await GetRepoInfoAsync(url, ct).ConfigureAwait(false);
        }
        catch (HubException e) when (e.Kind == HubErrorKind.Network)
        {
            return SnapshotFromCache(repoId, revision, type, e);
        }
        Cache.WriteRef(repoId, type, revision, info.Commit);
        var includes = include?.ToList();
        var excludes = exclude?.ToList();
        foreach (var file in info.Files)
        {
            if (includes is { Count: > 0 } && !includes.Any(g => Glob.IsMatch(file, g))) continue;
            if (excludes is { Count: > 0 } && excludes.Any(g => Glob.IsMatch(file, g))) continue;
            await DownloadAsync(repoId, file, info.Commit, type, ct).ConfigureAwait(false);
        }
        var dir = Cache.SnapshotDir(repoId, type, info.Commit);
        Directory.CreateDirectory(dir);
        return dir;
    }

    string FromCache(string repoId, string filename, string revision, RepoType type, HubException? cause)
    {
        var commit = Cache.ResolveCommit(repoId, type, revision);
        if (commit is not null)
        {
            var path = Cache.SnapshotPath(repoId, type, commit, filename);
            if (HubCache.FileExists(path)) return path;
        }
        var why = cause is null ? "offline mode (HF_HUB_OFFLINE) is on" : $"the hub could not be reached ({cause.Message})";
        throw new HubException(HubErrorKind.NotCached,
            $"{why} and '{filename}' of '{repoId}' at revision '{revision}' is not in the cache {Cache.RepoDir(repoId, type)}",
            cause?.Url, inner: cause);
    }

    string SnapshotFromCache(string repoId, string revision, RepoType type, HubException? cause)
    {
        var commit = Cache.ResolveCommit(repoId, type, revision);
        if (commit is not null)
        {
            var dir = Cache.SnapshotDir(repoId, type, commit);
            if (Directory.Exists(dir)) return dir;
        }
        var why = cause is null ? "offline mode (HF_HUB_OFFLINE) is on" : $"the hub could not be reached ({cause.Message})";
        throw new HubException(HubErrorKind.NotCached,
            $"{why} and no snapshot of '{repoId}' at revision '{revision}' is in the cache {Cache.RepoDir(repoId, type)}",
            cause?.Url, inner: cause);
    }

    /// <summary>HEAD the resolve URL, following relative redirects only, and read the hub's headers.</summary>
    public async Task<HubFileMetadata> GetMetadataAsync(string url, CancellationToken ct = default)
    {
        var current = new Uri(url);
        for (int hop = 0; hop <= MaxRedirects; hop++)
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(Options.MetadataTimeout);
            using var req = NewRequest(HttpMethod.Head, current);
            req.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("identity"));
            using var resp = await SendAsync(req, cts, ct, Options.MetadataTimeout).ConfigureAwait(false);
            int code = (int)resp.StatusCode;
            bool redirect = code is >= 300 and < 400 && resp.Headers.Location is not null;
            if (redirect && !resp.Headers.Location!.IsAbsoluteUri)
            {
                current = new Uri(current, resp.Headers.Location);
                continue;
            }
            if (!redirect && !resp.IsSuccessStatusCode) throw StatusError(resp, current.ToString());

            var commit = Header(resp, "X-Repo-Commit");
            var etag = NormalizeEtag(Header(resp, "X-Linked-Etag") ?? Header(resp, "ETag"));
            if (commit is null || !HubCache.IsCommitHash(commit))
                throw new HubException(HubErrorKind.Protocol, $"{current}: the server sent no valid X-Repo-Commit header (is it a Hugging Face hub?)", current.ToString(), resp.StatusCode);
            if (etag is null)
                throw new HubException(HubErrorKind.Protocol, $"{current}: the server sent no ETag or X-Linked-Etag header", current.ToString(), resp.StatusCode);
            HubCache.ValidateEtag(etag, current.ToString());
            long? size = long.TryParse(Header(resp, "X-Linked-Size"), out var linked) ? linked
                : redirect ? null : resp.Content.Headers.ContentLength;
            var location = redirect ? resp.Headers.Location!.ToString() : current.ToString();
            return new HubFileMetadata(commit, etag, size, location);
        }
        throw new HubException(HubErrorKind.Protocol, $"{url}: more than {MaxRedirects} redirects", url);
    }

    /// <summary>GET the model info and return its commit ("sha") and file list ("siblings[].rfilename").</summary>
    async Task<(string Commit, List<string> Files)> GetRepoInfoAsync(string url, CancellationToken ct)
    {
        var current = new Uri(url);
        for (int hop = 0; hop <= MaxRedirects; hop++)
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(Options.MetadataTimeout);
            using var req = NewRequest(HttpMethod.Get, current);
            using var resp = await SendAsync(req, cts, ct, Options.MetadataTimeout).ConfigureAwait(false);
            int code = (int)resp.StatusCode;
            if (code is >= 300 and < 400 && resp.Headers.Location is { IsAbsoluteUri: false } rel)
            {
                current = new Uri(current, rel);
                continue;
            }
            if (!resp.IsSuccessStatusCode) throw StatusError(resp, current.ToString());
            if (resp.Content.Headers.ContentLength > MaxJsonBytes)
                throw new HubException(HubErrorKind.Protocol, $"{current}: model info of {resp.Content.Headers.ContentLength} bytes is implausibly large", current.ToString());
            byte[] body;
            try
            {
                body = await resp.Content.ReadAsByteArrayAsync(cts.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (IsTransportError(e, ct))
            {
                throw NetworkError(current.ToString(), e, Options.MetadataTimeout, "reading the model info");
            }
            return ParseRepoInfo(body, current.ToString());
        }
        throw new HubException(HubErrorKind.Protocol, $"{url}: more than {MaxRedirects} redirects", url);
    }

    internal static (string Commit, List<string> Files) ParseRepoInfo(byte[] body, string url)
    {
        try
        {
            using var doc = JsonDocument.Parse(body);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("sha", out var sha) || sha.ValueKind != JsonValueKind.String
                || !HubCache.IsCommitHash(sha.GetString()!))
                throw new HubException(HubErrorKind.Protocol, $"{url}: the model info has no valid commit 'sha'", url);
            var files = new List<string>();
            if (root.TryGetProperty("siblings", out var siblings) && siblings.ValueKind == JsonValueKind.Array)
            {
                foreach (var s in siblings.EnumerateArray())
                {
                    if (s.ValueKind != JsonValueKind.Object || !s.TryGetProperty("rfilename", out var name) || name.ValueKind != JsonValueKind.String)
                        throw new HubException(HubErrorKind.Protocol, $"{url}: a sibling of the model info has no 'rfilename'", url);
                    var f = name.GetString()!;
                    HubCache.ValidateFilename(f, url);
                    files.Add(f);
                }
            }
            return (sha.GetString()!, files);
        }
        catch (JsonException e)
        {
            throw new HubException(HubErrorKind.Protocol, $"{url}: the model info is not valid JSON ({e.Message})", url, inner: e);
        }
    }

    /// <summary>
    /// Downloads the blob through blobs/&lt;etag&gt;.incomplete, resuming what an earlier attempt left there, retrying broken
    /// transfers, then checks size and SHA-256 before the rename that makes it a blob. A corrupt download is deleted.
    /// </summary>
    async Task DownloadBlobAsync(string repoId, string filename, HubFileMetadata meta, string blob, CancellationToken ct)
    {
        var incomplete = blob + ".incomplete";
        Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
        var delay = Options.RetryDelay;
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                await TransferAsync(repoId, filename, meta, incomplete, ct).ConfigureAwait(false);
                break;
            }
            catch (HubException e) when (e.Kind == HubErrorKind.Network && attempt < Options.Retries && !ct.IsCancellationRequested)
            {
                await Task.Delay(delay, ct).ConfigureAwait(false);
                delay *= 2;
            }
        }

        long length = new FileInfo(incomplete).Length;
        if (meta.Size is long size && length != size)
        {
            File.Delete(incomplete);
            throw new HubException(HubErrorKind.Integrity, $"{meta.Location}: '{filename}' has {length} bytes but the hub advertised {size}; the download was deleted", meta.Location);
        }
        if (HubCache.IsSha256(meta.Etag))
        {
            string actual;
            using (var fs = new FileStream(incomplete, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20))
                actual = Convert.ToHexStringLower(await SHA256.HashDataAsync(fs, ct).ConfigureAwait(false));
            if (actual != meta.Etag)
            {
                File.Delete(incomplete);
                throw new HubException(HubErrorKind.Integrity,
                    $"{meta.Location}: SHA-256 of '{filename}' is {actual} but the hub advertised {meta.Etag}; the download was deleted", meta.Location);
            }
        }
        File.Move(incomplete, blob, overwrite: true);
    }

    /// <summary>One GET of the remaining bytes into <paramref name="incomplete"/>; throws a Network HubException when it breaks off.</summary>
    async Task TransferAsync(string repoId, string filename, HubFileMetadata meta, string incomplete, CancellationToken ct)
    {
        long have = File.Exists(incomplete) ? new FileInfo(incomplete).Length : 0;
        if (meta.Size is long size0)
        {
            if (have == size0)
            {
                if (size0 == 0) File.Create(incomplete).Dispose();
                return;
            }
            if (have > size0)
            {
                File.Delete(incomplete);
                have = 0;
            }
        }
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(Options.DownloadTimeout);
        var (resp, url) = await GetFollowingRedirectsAsync(new Uri(meta.Location), have, cts, ct).ConfigureAwait(false);
        using (resp)
        {
            int code = (int)resp.StatusCode;
            if (code == 416 && have > 0)
            {
                // The range starts at or past the end: what we have is suspect, so start over.
                File.Delete(incomplete);
                throw new HubException(HubErrorKind.Network, $"{url}: HTTP 416 for a resumed download of {have} bytes; restarting", url, resp.StatusCode);
            }
            if (code is 408 or 429 || code >= 500)
                throw new HubException(HubErrorKind.Network, $"{url}: HTTP {code} {resp.ReasonPhrase}", url, resp.StatusCode);
            if (!resp.IsSuccessStatusCode) throw StatusError(resp, url);

            bool append = false;
            if (code == 206 && have > 0)
            {
                var range = resp.Content.Headers.ContentRange;
                append = range?.From == have;
            }
            if (!append) have = 0; // a 200 to a ranged request (or a range that does not fit): restart from zero
            long? total = meta.Size ?? (resp.Content.Headers.ContentLength is long cl ? have + cl : null);

            await using var file = new FileStream(incomplete, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
            Stream body;
            try
            {
                body = await resp.Content.ReadAsStreamAsync(cts.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (IsTransportError(e, ct))
            {
                throw NetworkError(url, e, Options.DownloadTimeout, $"after {have} bytes of '{filename}'");
            }
            await using (body.ConfigureAwait(false))
            {
                var buffer = new byte[1 << 16];
                long done = have;
                Options.Progress?.Invoke(new HubProgress(repoId, filename, done, total, false));
                while (true)
                {
                    cts.CancelAfter(Options.DownloadTimeout);
                    int n;
                    try
                    {
                        n = await body.ReadAsync(buffer, cts.Token).ConfigureAwait(false);
                    }
                    catch (Exception e) when (IsTransportError(e, ct))
                    {
                        await file.FlushAsync(CancellationToken.None).ConfigureAwait(false);
                        throw NetworkError(url, e, Options.DownloadTimeout, $"after {done} of {total?.ToString() ?? "?"} bytes of '{filename}'");
                    }
                    if (n == 0) break;
                    await file.WriteAsync(buffer.AsMemory(0, n), CancellationToken.None).ConfigureAwait(false);
                    done += n;
                    if (total is long t && done > t)
                    {
                        file.Close();
                        File.Delete(incomplete);
                        throw new HubException(HubErrorKind.Integrity, $"{url}: '{filename}' is longer than the advertised {t} bytes; the download was deleted", url);
                    }
                    Options.Progress?.Invoke(new HubProgress(repoId, filename, done, total, false));
                }
                await file.FlushAsync(CancellationToken.None).ConfigureAwait(false);
                if (total is long expected && done < expected)
                    throw new HubException(HubErrorKind.Network,
                        $"{url}: truncated transfer: the server closed the connection after {done} of {expected} bytes of '{filename}'", url);
            }
        }
    }

    /// <summary>GET with Range from <paramref name="have"/>, following any redirect; the token goes only to the endpoint's host.</summary>
    async Task<(HttpResponseMessage, string)> GetFollowingRedirectsAsync(Uri start, long have, CancellationTokenSource cts, CancellationToken ct)
    {
        var current = start;
        for (int hop = 0; hop <= MaxRedirects; hop++)
        {
            cts.CancelAfter(Options.DownloadTimeout);
            using var req = NewRequest(HttpMethod.Get, current);
            req.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("identity"));
            if (have > 0) req.Headers.Range = new RangeHeaderValue(have, null);
            var resp = await SendAsync(req, cts, ct, Options.DownloadTimeout).ConfigureAwait(false);
            int code = (int)resp.StatusCode;
            if (code is >= 300 and < 400 && resp.Headers.Location is { } loc)
            {
                resp.Dispose();
                current = loc.IsAbsoluteUri ? loc : new Uri(current, loc);
                continue;
            }
            return (resp, current.ToString());
        }
        throw new HubException(HubErrorKind.Protocol, $"{start}: more than {MaxRedirects} redirects", start.ToString());
    }

    HttpRequestMessage NewRequest(HttpMethod method, Uri url)
    {
        var req = new HttpRequestMessage(method, url);
        // NOTE: the token goes only to the hub's own host, never to a CDN a redirect points at.
        if (Options.Token is { Length: > 0 } token && SameHost(url, new Uri(Options.Endpoint)))
            req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return req;
    }

    async Task<HttpResponseMessage> SendAsync(HttpRequestMessage req, CancellationTokenSource cts, CancellationToken ct, TimeSpan timeout)
    {
        try
        {
            return await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, cts.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (IsTransportError(e, ct))
        {
            throw NetworkError(req.RequestUri!.ToString(), e, timeout, "");
        }
    }

    static bool IsTransportError(Exception e, CancellationToken ct) =>
        e is HttpRequestException or IOException || (e is OperationCanceledException && !ct.IsCancellationRequested);

    static HubException NetworkError(string url, Exception e, TimeSpan timeout, string where)
    {
        where = where.Length > 0 ? " " + where : "";
        string what = e switch
        {
            OperationCanceledException => $"timed out (no answer for {timeout.TotalSeconds:0.#} s){where}",
            HttpIOException { HttpRequestError: HttpRequestError.ResponseEnded } => $"truncated transfer: the server closed the connection early{where}",
            HttpRequestException { HttpRequestError: HttpRequestError.ConnectionError } => $"cannot connect{where}: {e.Message}",
            _ => $"connection dropped{where}: {e.Message}",
        };
        return new HubException(HubErrorKind.Network, $"{url}: {what}", url, inner: e);
    }

    HubException StatusError(HttpResponseMessage resp, string url)
    {
        int code = (int)resp.StatusCode;
        var errorCode = Header(resp, "X-Error-Code");
        var serverMessage = Header(resp, "X-Error-Message");
        var detail = serverMessage is null ? "" : $" Server says: {serverMessage}";
        var tokenHint = Options.Token is null
            ? "if it is private or gated and you have access, set HF_TOKEN to a token (https://huggingface.co/settings/tokens)"
            : "the token sent (HF_TOKEN) was refused or lacks access to it";
        var status = $"HTTP {code} {resp.ReasonPhrase}";
        return errorCode switch
        {
            "RepoNotFound" => new HubException(HubErrorKind.NotFound, $"{url}: repository not found ({status}); {tokenHint}.{detail}", url, resp.StatusCode, errorCode),
            "RevisionNotFound" => new HubException(HubErrorKind.NotFound, $"{url}: revision not found ({status}).{detail}", url, resp.StatusCode, errorCode),
            "EntryNotFound" => new HubException(HubErrorKind.NotFound, $"{url}: file not found in the repository at that revision ({status}).{detail}", url, resp.StatusCode, errorCode),
            "GatedRepo" => new HubException(HubErrorKind.Unauthorized, $"{url}: gated repository ({status}): accept its terms on the hub, then set HF_TOKEN to a token of that account.{detail}", url, resp.StatusCode, errorCode),
            _ when code is 401 or 403 => new HubException(HubErrorKind.Unauthorized, $"{url}: access denied ({status}); {tokenHint}.{detail}", url, resp.StatusCode, errorCode),
            _ when code == 404 => new HubException(HubErrorKind.NotFound, $"{url}: not found ({status}): check the repository id, the revision and the file name.{detail}", url, resp.StatusCode, errorCode),
            _ => new HubException(HubErrorKind.HttpError, $"{url}: {status}.{detail}", url, resp.StatusCode, errorCode),
        };
    }

    static async Task<FileStream> AcquireLockAsync(string path, CancellationToken ct)
    {
        // NOTE: FileShare.None takes flock(LOCK_EX) on Unix, the same lock Python's filelock takes, so the two can share a cache.
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(30);
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (DateTime.UtcNow < deadline)
            {
                await Task.Delay(200, ct).ConfigureAwait(false);
            }
        }
    }

    static string? Header(HttpResponseMessage resp, string name) =>
        resp.Headers.TryGetValues(name, out var v) || resp.Content.Headers.TryGetValues(name, out v) ? v.FirstOrDefault() : null;

    /// <summary>Drops a weak-validator "W/" prefix and the quotes.</summary>
    internal static string? NormalizeEtag(string? etag)
    {
        if (etag is null) return null;
        var e = etag.Trim();
        if (e.StartsWith("W/", StringComparison.Ordinal)) e = e[2..];
        e = e.Trim('"');
        return e.Length == 0 ? null : e;
    }

    static bool SameHost(Uri a, Uri b) =>
        string.Equals(a.Host, b.Host, StringComparison.OrdinalIgnoreCase) && a.Port == b.Port;

    static string UrlPrefix(RepoType type) => type switch { RepoType.Dataset => "datasets/", RepoType.Space => "spaces/", _ => "" };

    static string ApiKind(RepoType type) => type switch { RepoType.Dataset => "datasets", RepoType.Space => "spaces", _ => "models" };

    static string EncodePath(string path) => string.Join('/', path.Split('/').Select(Uri.EscapeDataString));
}

/// <summary>One-call access to the hub with options from the environment.</summary>
public static class Hub
{
    /// <summary>Downloads one file like huggingface_hub.hf_hub_download and returns its cached path.</summary>
    public static string Download(string repoId, string filename, string revision = "main", HubOptions? options = null, RepoType type = RepoType.Model)
    {
        using var client = new HubClient(options);
        return client.Download(repoId, filename, revision, type);
    }

    /// <summary>Downloads a revision's files matching <paramref name="include"/> (all when null) like huggingface_hub.snapshot_download.</summary>
    public static string SnapshotDownload(string repoId, string revision = "main", IEnumerable<string>? include = null, HubOptions? options = null,
        RepoType type = RepoType.Model)
    {
        using var client = new HubClient(options);
        return client.SnapshotDownload(repoId, revision, include, null, type);
    }
}
