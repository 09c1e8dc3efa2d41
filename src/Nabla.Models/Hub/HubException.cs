using System.Net;

namespace Nabla.Models;

/// <summary>What went wrong with a hub request or download.</summary>
public enum HubErrorKind
{
    /// <summary>Repository, revision or file not found (HTTP 404, or X-Error-Code RepoNotFound/RevisionNotFound/EntryNotFound).</summary>
    NotFound,
    /// <summary>HTTP 401/403: private or gated repository, or a bad token.</summary>
    Unauthorized,
    /// <summary>Another HTTP status the client does not handle.</summary>
    HttpError,
    /// <summary>The connection failed, dropped, timed out or the server closed it before the whole file arrived.</summary>
    Network,
    /// <summary>The file arrived whole but its size or SHA-256 differs from what the hub advertised.</summary>
    Integrity,
    /// <summary>Offline mode (or the hub unreachable) and the file is not in the cache.</summary>
    NotCached,
    /// <summary>The server's answer lacks what the hub protocol requires (X-Repo-Commit, ETag, a valid model info).</summary>
    Protocol,
}

/// <summary>A hub request or download that failed. The message names the URL (or cache path) and the status or cause.</summary>
public sealed class HubException : NablaException
{
    public HubErrorKind Kind { get; }

    /// <summary>The URL requested, or null when no request was made (offline).</summary>
    public string? Url { get; }

    /// <summary>The HTTP status, when the server answered.</summary>
    public HttpStatusCode? StatusCode { get; }

    /// <summary>The hub's X-Error-Code header (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo), when sent.</summary>
    public string? ErrorCode { get; }

    public HubException(HubErrorKind kind, string message, string? url = null, HttpStatusCode? status = null, string? errorCode = null, Exception? inner = null)
        : base(message, inner!) // NOTE: Exception accepts a null inner; NablaException's signature is just not annotated for it.
    {
        Kind = kind;
        Url = url;
        StatusCode = status;
        ErrorCode = errorCode;
    }
}
