using System.Text.RegularExpressions;

namespace Nabla.Models;

/// <summary>
/// The huggingface_hub cache layout, shared with Python users:
/// <c>{cache}/models--org--name/{blobs/&lt;etag&gt;, snapshots/&lt;commit&gt;/&lt;path&gt; → ../../blobs/&lt;etag&gt;, refs/&lt;revision&gt;}</c>.
/// </summary>
public sealed partial class HubCache(string root)
{
    public string Root { get; } = root;

    [GeneratedRegex("^[0-9a-f]{40}$")]
    private static partial Regex CommitRegex();

    [GeneratedRegex("^[0-9a-f]{64}$")]
    private static partial Regex Sha256Regex();

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")]
    private static partial Regex RepoIdRegex();

    [GeneratedRegex("^[A-Za-z0-9_.:+\\-]+$")]
    private static partial Regex EtagRegex();

    public static bool IsCommitHash(string revision) => CommitRegex().IsMatch(revision);

    public static bool IsSha256(string etag) => Sha256Regex().IsMatch(etag);

    /// <summary>"models--org--name" (datasets--…, spaces--…), as huggingface_hub's repo_folder_name.</summary>
    public static string RepoFolderName(string repoId, RepoType type) =>
        (type switch { RepoType.Dataset => "datasets", RepoType.Space => "spaces", _ => "models" }) + "--" + repoId.Replace("/", "--", StringComparison.Ordinal);

    public string RepoDir(string repoId, RepoType type) => Path.Combine(Root, RepoFolderName(repoId, type));

    public string BlobPath(string repoId, RepoType type, string etag) => Path.Combine(RepoDir(repoId, type), "blobs", etag);

    public string SnapshotDir(string repoId, RepoType type, string commit) => Path.Combine(RepoDir(repoId, type), "snapshots", commit);

    public string SnapshotPath(string repoId, RepoType type, string commit, string filename) =>
        Path.Combine(SnapshotDir(repoId, type, commit), filename.Replace('/', Path.DirectorySeparatorChar));

    public string RefPath(string repoId, RepoType type, string revision)
    {
        ValidateRevision(revision);
        return Path.Combine(RepoDir(repoId, type), "refs", revision.Replace('/', Path.DirectorySeparatorChar));
    }

    /// <summary>Throws unless the revision can name a file under refs/ (a branch like "refs/pr/1" is fine; ".." is not).</summary>
    public static void ValidateRevision(string revision)
    {
        if (revision.Length == 0 || revision.StartsWith('/') || revision.Contains('\\') || revision.Contains('\0')
            || revision.Split('/').Any(p => p is "" or "." or ".."))
            throw new ArgumentException($"invalid revision '{revision}'", nameof(revision));
    }

    /// <summary>True when the path is a file or a link to an existing file: a dangling snapshot link counts as absent, as in Python.</summary>
    public static bool FileExists(string path)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget is null) return info.Exists;
        try
        {
            return info.ResolveLinkTarget(returnFinalTarget: true) is FileInfo { Exists: true };
        }
        catch (IOException)
        {
            return false;
        }
    }

    public string LockPath(string repoId, RepoType type, string etag) => Path.Combine(Root, ".locks", RepoFolderName(repoId, type), etag + ".lock");

    /// <summary>The commit a revision names in the cache: itself when it is a commit hash, else the content of refs/&lt;revision&gt;.</summary>
    public string? ResolveCommit(string repoId, RepoType type, string revision)
    {
        if (IsCommitHash(revision)) return revision;
        var refPath = RefPath(repoId, type, revision);
        if (!File.Exists(refPath)) return null;
        var commit = File.ReadAllText(refPath).Trim();
        return IsCommitHash(commit) ? commit : null;
    }

    /// <summary>Writes refs/&lt;revision&gt; = commit atomically (temp file, then rename), when it differs.</summary>
    public void WriteRef(string repoId, RepoType type, string revision, string commit)
    {
        if (revision == commit) return;
        var path = RefPath(repoId, type, revision);
        if (File.Exists(path) && File.ReadAllText(path).Trim() == commit) return;
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var tmp = path + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp";
        File.WriteAllText(tmp, commit);
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>
    /// Points snapshots/&lt;commit&gt;/&lt;filename&gt; at the blob by a relative symlink (as Python does), or copies the blob
    /// where the file system refuses symlinks.
    /// </summary>
    public string LinkSnapshot(string repoId, RepoType type, string commit, string filename, string etag)
    {
        var blob = BlobPath(repoId, type, etag);
        var pointer = SnapshotPath(repoId, type, commit, filename);
        var dir = Path.GetDirectoryName(pointer)!;
        Directory.CreateDirectory(dir);
        if (File.Exists(pointer) || new FileInfo(pointer).LinkTarget is not null) File.Delete(pointer);
        try
        {
            File.CreateSymbolicLink(pointer, Path.GetRelativePath(dir, blob));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or PlatformNotSupportedException)
        {
            // NOTE: huggingface_hub copies too where symlinks are unsupported (some Windows setups); the copy goes through a
            // temp name so a reader never sees half a file.
            var tmp = pointer + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp";
            File.Copy(blob, tmp, overwrite: true);
            File.Move(tmp, pointer, overwrite: true);
        }
        return pointer;
    }

    /// <summary>Throws unless <paramref name="repoId"/> is "name" or "org/name" of safe characters.</summary>
    public static void ValidateRepoId(string repoId)
    {
        if (!RepoIdRegex().IsMatch(repoId) || repoId.Contains("..", StringComparison.Ordinal) || repoId.Contains("--", StringComparison.Ordinal))
            throw new ArgumentException($"invalid repository id '{repoId}': expected 'name' or 'org/name' of letters, digits, '-', '_' and '.'", nameof(repoId));
    }

    /// <summary>
    /// Throws unless <paramref name="filename"/> is a relative path inside the repository: no "..", no absolute path,
    /// no backslash. Names come from the server, so this keeps a hostile one from writing outside the cache.
    /// </summary>
    public static void ValidateFilename(string filename, string? url = null)
    {
        bool bad = filename.Length == 0 || filename.StartsWith('/') || filename.Contains('\\') || filename.Contains('\0')
            || filename.Split('/').Any(p => p is "" or "." or "..") || Path.IsPathRooted(filename);
        if (bad) throw new HubException(HubErrorKind.Protocol, $"invalid file path '{filename}' in repository" + (url is null ? "" : $" ({url})"), url);
    }

    /// <summary>Throws unless the server's etag is safe to use as a file name.</summary>
    public static void ValidateEtag(string etag, string url)
    {
        if (etag.Length is 0 or > 128 || !EtagRegex().IsMatch(etag))
            throw new HubException(HubErrorKind.Protocol, $"{url}: the server sent an unusable ETag '{etag}'", url);
    }
}
