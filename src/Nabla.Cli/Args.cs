using System.Globalization;

namespace Nabla.Cli;

/// <summary>A small option parser: "--name value", "--flag", positionals; unknown options are errors naming the option.</summary>
public sealed class Args
{
    readonly Dictionary<string, string?> options = new();
    public List<string> Positionals { get; } = new();

    public Args(IEnumerable<string> args, ISet<string> flags, ISet<string> valued)
    {
        var list = args.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            var a = list[i];
            if (a.StartsWith("--", StringComparison.Ordinal))
            {
                var name = a;
                string? value = null;
                int eq = a.IndexOf('=');
                if (eq > 0) { name = a[..eq]; value = a[(eq + 1)..]; }
                if (flags.Contains(name)) { options[name] = value ?? "true"; continue; }
                if (!valued.Contains(name)) throw new UsageException($"unknown option '{name}'");
                if (value is null)
                {
                    if (i + 1 >= list.Count) throw new UsageException($"option '{name}' needs a value");
                    value = list[++i];
                }
                options[name] = value;
            }
            else Positionals.Add(a);
        }
    }

    public bool Has(string name) => options.ContainsKey(name);
    public string? Get(string name) => options.TryGetValue(name, out var v) ? v : null;
    public string Get(string name, string def) => Get(name) ?? def;

    public int Int(string name, int def)
    {
        var v = Get(name);
        if (v is null) return def;
        return int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var r) ? r : throw new UsageException($"option '{name}' expects an integer, got '{v}'");
    }

    public double Double(string name, double def)
    {
        var v = Get(name);
        if (v is null) return def;
        return double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var r) ? r : throw new UsageException($"option '{name}' expects a number, got '{v}'");
    }
}

public sealed class UsageException(string message) : Exception(message);
