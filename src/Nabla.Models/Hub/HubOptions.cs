namespace Nabla.Models;

/// <summary>The kind of Hugging Face repository: it sets the URL prefix and the cache folder prefix.</summary>
public enum RepoType
{
    Model,
    Dataset,
    Space,
}

/// <summary>One progress report of a file download.</summary>
/// <param name="RepoId">the repository, e.g. "openai-community/gpt2"</param>
/// <param name="Filename">the file's path inside the repository</param>
/// <param name="BytesDone">bytes of the file present so far, including any resumed part</param>
/// <param name="TotalBytes">the advertised size, when known</param>
/// <param name="Completed">true on the last report of a file, after it was verified and moved into the cache</param>
public readonly record struct HubProgress(string RepoId, string Filename, long BytesDone, long? TotalBytes, bool Completed);

/// <summary>
/// Settings of a <see cref="HubClient"/>. <see cref="FromEnvironment"/> reads them the way Python's huggingface_hub does
/// (HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_TOKEN, HF_HUB_OFFLINE, HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT).
/// </summary>
public sealed record HubOptions
{
    public const string DefaultEndpoint = "https://huggingface.co";

    /// <summary>The hub's base URL, without a trailing slash.</summary>
    public string Endpoint { get; init; } = DefaultEndpoint;

    /// <summary>The hub cache folder (the one holding models--org--name).</summary>
    public string CacheDir { get; init; } = DefaultCacheDir(Environment.GetEnvironmentVariable);

    /// <summary>Bearer token sent as the Authorization header; null sends none.</summary>
    public string? Token { get; init; }

    /// <summary>When true no HTTP request is made: files resolve from the cache or the call fails.</summary>
    public bool Offline { get; init; }

    /// <summary>Bound on a metadata request (HEAD or model info), connect included.</summary>
    public TimeSpan MetadataTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Bound on connecting and on each read of a download: a server silent for longer fails the transfer.</summary>
    public TimeSpan DownloadTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How many times a transfer that broke off (dropped connection, early close, timeout, 408/429/5xx) is resumed within one call.</summary>
    public int Retries { get; init; } = 3;

    /// <summary>First delay between retries; doubled on each further retry.</summary>
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Called as bytes arrive (possibly often: throttle what is printed) and once when a file completes.</summary>
    public Action<HubProgress>? Progress { get; init; }

    /// <summary>Options from the environment; <paramref name="getenv"/> defaults to the process environment.</summary>
    public static HubOptions FromEnvironment(Func<string, string?>? getenv = null)
    {
        getenv ??= Environment.GetEnvironmentVariable;
        var endpoint = NonEmpty(getenv("HF_ENDPOINT")) ?? DefaultEndpoint;
        return new HubOptions
        {
            Endpoint = endpoint.TrimEnd('/'),
            CacheDir = DefaultCacheDir(getenv),
            Token = ReadToken(getenv),
            Offline = IsTrue(getenv("HF_HUB_OFFLINE")) || IsTrue(getenv("TRANSFORMERS_OFFLINE")),
            MetadataTimeout = Seconds(getenv("HF_HUB_ETAG_TIMEOUT"), 10),
            DownloadTimeout = Seconds(getenv("HF_HUB_DOWNLOAD_TIMEOUT"), 10),
        };
    }

    /// <summary>HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else HF_HOME/hub, HF_HOME defaulting to $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface.</summary>
    public static string DefaultCacheDir(Func<string, string?> getenv)
    {
        var hub = NonEmpty(getenv("HF_HUB_CACHE")) ?? NonEmpty(getenv("HUGGINGFACE_HUB_CACHE"));
        return ExpandHome(hub ?? Path.Combine(HfHome(getenv), "hub"));
    }

    static string HfHome(Func<string, string?> getenv)
    {
        var home = NonEmpty(getenv("HF_HOME"));
        if (home is not null) return ExpandHome(home);
        var xdg = NonEmpty(getenv("XDG_CACHE_HOME"))
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(ExpandHome(xdg), "huggingface");
    }

    /// <summary>HF_TOKEN, else HUGGING_FACE_HUB_TOKEN, else the file HF_TOKEN_PATH or HF_HOME/token.</summary>
    static string? ReadToken(Func<string, string?> getenv)
    {
        var token = NonEmpty(getenv("HF_TOKEN")) ?? NonEmpty(getenv("HUGGING_FACE_HUB_TOKEN"));
        if (token is not null) return token.Trim();
        var path = NonEmpty(getenv("HF_TOKEN_PATH")) is { } p ? ExpandHome(p) : Path.Combine(HfHome(getenv), "token");
        try
        {
            return File.Exists(path) ? NonEmpty(File.ReadAllText(path).Trim()) : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    internal static bool IsTrue(string? v) =>
        v is not null && v.Trim().ToUpperInvariant() is "1" or "ON" or "YES" or "TRUE";

    static TimeSpan Seconds(string? v, double def) =>
        double.TryParse(v, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var s) && s > 0
            ? TimeSpan.FromSeconds(s) : TimeSpan.FromSeconds(def);

    static string? NonEmpty(string? s) => string.IsNullOrWhiteSpace(s) ? null : s;

    static string ExpandHome(string p) =>
        p == "~" || p.StartsWith("~/", StringComparison.Ordinal)
            ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), p.Length > 2 ? p[2..] : "")
            : p;
}
