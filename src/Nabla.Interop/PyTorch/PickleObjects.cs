using System.Collections;
using System.Numerics;

namespace Nabla.Interop;

// The data model of an unpickled checkpoint. A value is one of: null (None), bool, long, BigInteger (ints that do
// not fit 64 bits), double, string, byte[] (bytes), Tensor, PyDict, PyList, PyTuple, PySet, or TorchDevice.

/// <summary>A Python dict or collections.OrderedDict: insertion-ordered keys (str, int, float, bool, None or tuples of those).</summary>
public sealed class PyDict : IEnumerable<KeyValuePair<object?, object?>>
{
    readonly List<object?> keys = [];
    readonly Dictionary<PyKey, object?> values = [];

    /// <summary>True when built as a <c>collections.OrderedDict</c>.</summary>
    public bool IsOrdered { get; init; }

    /// <summary>Attributes set through pickle BUILD (an OrderedDict's <c>_metadata</c>, for instance); not items.</summary>
    public Dictionary<string, object?> Attributes { get; } = [];

    public int Count => keys.Count;

    public IEnumerable<object?> Keys => keys;

    public IEnumerable<object?> Values => keys.Select(k => values[new PyKey(k)]);

    public object? this[object? key]
    {
        get => values.TryGetValue(new PyKey(key), out var v) ? v : throw new KeyNotFoundException($"key {PyRepr.Of(key)} not in dict");
        set
        {
            var k = new PyKey(key);
            if (!values.ContainsKey(k)) keys.Add(key);
            values[k] = value;
        }
    }

    public bool ContainsKey(object? key) => values.ContainsKey(new PyKey(key));

    public bool TryGetValue(object? key, out object? value) => values.TryGetValue(new PyKey(key), out value);

    public IEnumerator<KeyValuePair<object?, object?>> GetEnumerator()
    {
        foreach (var k in keys) yield return new(k, values[new PyKey(k)]);
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    internal void ReplaceValues(Func<object?, object?, object?> mapWithKey)
    {
        foreach (var k in keys) { var pk = new PyKey(k); values[pk] = mapWithKey(k, values[pk]); }
    }

    /// <summary>Whether <paramref name="key"/> can be a dict key; tuples nested deeper than 32 are refused.</summary>
    internal static bool IsHashable(object? key) => IsHashable(key, 0);

    static bool IsHashable(object? key, int depth) => key switch
    {
        null or bool or long or BigInteger or double or string or byte[] or TorchDevice => true,
        PyTuple t => depth < 32 && t.All(x => IsHashable(x, depth + 1)),
        _ => false,
    };

    /// <summary>Structural equality for dict keys (tuples compare by items, bytes by content).</summary>
    readonly struct PyKey(object? value) : IEquatable<PyKey>
    {
        readonly object? value = value;

        public bool Equals(PyKey other) => KeyEquals(value, other.value);
        public override bool Equals(object? obj) => obj is PyKey k && Equals(k);
        public override int GetHashCode() => KeyHash(value);

        static bool KeyEquals(object? a, object? b) => (a, b) switch
        {
            (null, null) => true,
            (PyTuple x, PyTuple y) => x.Count == y.Count && x.Zip(y).All(p => KeyEquals(p.First, p.Second)),
            (byte[] x, byte[] y) => x.AsSpan().SequenceEqual(y),
            _ => a is not null && a.Equals(b),
        };

        static int KeyHash(object? a) => a switch
        {
            null => 0,
            PyTuple t => t.Aggregate(17, (h, x) => h * 31 + KeyHash(x)),
            byte[] b => b.Length,
            _ => a.GetHashCode(),
        };
    }
}

/// <summary>A Python list.</summary>
public sealed class PyList : List<object?>
{
    public PyList() { }
    public PyList(IEnumerable<object?> items) : base(items) { }
}

/// <summary>A Python tuple (or torch.Size).</summary>
public sealed class PyTuple : IReadOnlyList<object?>
{
    internal readonly object?[] Items;

    public PyTuple(params object?[] items) => Items = items;

    public static readonly PyTuple Empty = new();

    public int Count => Items.Length;
    public object? this[int index] => Items[index];
    public IEnumerator<object?> GetEnumerator() => ((IEnumerable<object?>)Items).GetEnumerator();
    IEnumerator IEnumerable.GetEnumerator() => Items.GetEnumerator();
}

/// <summary>A Python set or frozenset, items in pickle order.</summary>
public sealed class PySet : List<object?>
{
    public bool IsFrozen { get; init; }
}

/// <summary>A <c>torch.device</c>: "cpu", "cuda:0", ...</summary>
public sealed record TorchDevice(string Name)
{
    public override string ToString() => Name;
}

/// <summary>A global name (module.name) that the unpickler allowed; a constructor or a marker type, never executed.</summary>
internal sealed record PyGlobal(string Module, string Name)
{
    public string FullName => Module + "." + Name;
    public override string ToString() => FullName;
}

/// <summary>Short printable forms of values, for error messages.</summary>
internal static class PyRepr
{
    public static string Of(object? v) => Of(v, 0);

    static string Of(object? v, int depth) => v switch
    {
        null => "None",
        bool b => b ? "True" : "False",
        string s => "'" + (s.Length > 60 ? s[..60] + "..." : s) + "'",
        long or BigInteger => Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture)!,
        double d => d.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        PyTuple t => depth >= 3 ? "(...)" : t.Count <= 6 ? "(" + string.Join(", ", t.Select(x => Of(x, depth + 1))) + (t.Count == 1 ? ",)" : ")") : $"tuple of {t.Count}",
        PyGlobal g => g.FullName,
        _ => TypeName(v),
    };

    public static string TypeName(object? v) => v switch
    {
        null => "None",
        bool => "bool",
        long or BigInteger => "int",
        double => "float",
        string => "str",
        byte[] => "bytes",
        Tensor => "Tensor",
        PyDict d => d.IsOrdered ? "OrderedDict" : "dict",
        PyList => "list",
        PyTuple => "tuple",
        PySet => "set",
        TorchDevice => "torch.device",
        PyGlobal g => g.FullName,
        _ => v.GetType().Name,
    };
}
