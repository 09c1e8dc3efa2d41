using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace Nabla.Interop;

/// <summary>
/// A pickle virtual machine that executes nothing. It builds the data model of <see cref="PyDict"/> and friends;
/// the few globals it accepts (OrderedDict, tensor rebuild functions, storage classes, torch.device, ...) are
/// interpreted as data constructors, and any other global is refused by name, as torch.load(weights_only=True) does.
/// </summary>
internal sealed class Unpickler
{
    const int MaxMarks = 100_000;

    readonly Stream stream;
    readonly string file;
    readonly Func<PyTuple, object?> persistentLoad;
    readonly Func<byte[], object?>? loadFromBytes;
    readonly List<object?> stack = [];
    readonly List<int> marks = [];
    readonly Dictionary<long, object?> memo = [];
    long opStart;

    /// <param name="stream">Positioned at the first opcode; read up to and including STOP.</param>
    /// <param name="file">The file's name, for messages.</param>
    /// <param name="persistentLoad">Turns a persistent id tuple into a value (a storage).</param>
    /// <param name="loadFromBytes">Loads a legacy-format byte string (torch.storage._load_from_bytes); null refuses it.</param>
    public Unpickler(Stream stream, string file, Func<PyTuple, object?> persistentLoad, Func<byte[], object?>? loadFromBytes = null)
    {
        this.stream = stream;
        this.file = file;
        this.persistentLoad = persistentLoad;
        this.loadFromBytes = loadFromBytes;
    }

    ModelFormatException Error(string message) => new($"{file}: pickle at byte {opStart}: {message}");

    long Remaining => stream.Length - stream.Position;

    byte ReadU8()
    {
        int b = stream.ReadByte();
        if (b < 0) throw Error("truncated pickle (no STOP opcode before the end of the data)");
        return (byte)b;
    }

    byte[] ReadBytes(long n, string what)
    {
        if (n < 0 || n > Remaining || n > Array.MaxLength)
            throw Error($"{what} of {n} bytes runs past the end of the data ({Remaining} bytes left)");
        var b = new byte[n];
        stream.ReadExactly(b);
        return b;
    }

    uint ReadU32() => BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4, "operand"));
    ulong ReadU64() => BinaryPrimitives.ReadUInt64LittleEndian(ReadBytes(8, "operand"));

    string ReadLine(string what)
    {
        var sb = new StringBuilder();
        while (true)
        {
            byte b = ReadU8();
            if (b == (byte)'\n') return sb.ToString();
            if (sb.Length >= 256) throw Error($"{what} longer than 256 characters");
            sb.Append((char)b);
        }
    }

    string Utf8(byte[] b)
    {
        try { return new UTF8Encoding(false, true).GetString(b); }
        catch (DecoderFallbackException) { throw Error("string is not valid UTF-8"); }
    }

    void Push(object? v) => stack.Add(v);

    object? Pop()
    {
        int floor = marks.Count > 0 ? marks[^1] : 0;
        if (stack.Count <= floor) throw Error("stack underflow");
        var v = stack[^1];
        stack.RemoveAt(stack.Count - 1);
        return v;
    }

    object? Top()
    {
        int floor = marks.Count > 0 ? marks[^1] : 0;
        if (stack.Count <= floor) throw Error("stack underflow");
        return stack[^1];
    }

    object?[] PopMark()
    {
        if (marks.Count == 0) throw Error("no MARK on the stack");
        int m = marks[^1];
        marks.RemoveAt(marks.Count - 1);
        var items = stack.GetRange(m, stack.Count - m).ToArray();
        stack.RemoveRange(m, stack.Count - m);
        return items;
    }

    void MemoPut(long index)
    {
        if (index < 0) throw Error("negative memo index");
        memo[index] = Top();
    }

    object? MemoGet(long index) => memo.TryGetValue(index, out var v) ? v : throw Error($"memo key {index} was never stored");

    /// <summary>Runs the pickle up to STOP and returns its value.</summary>
    public object? Load()
    {
        while (true)
        {
            opStart = stream.Position;
            byte op = ReadU8();
            switch (op)
            {
                case 0x80: // PROTO
                    {
                        byte v = ReadU8();
                        if (v > 5) throw Error($"unsupported pickle protocol {v}");
                        break;
                    }
                case 0x95: ReadU64(); break; // FRAME: a length hint
                case (byte)'.': // STOP
                    {
                        var v = Pop();
                        if (stack.Count != 0 || marks.Count != 0) { /* Python ignores leftovers too */ }
                        return v;
                    }
                case (byte)'(':
                    if (marks.Count >= MaxMarks) throw Error("too many nested MARKs");
                    marks.Add(stack.Count);
                    break;
                case (byte)'0': Pop(); break; // POP
                case (byte)'1': PopMark(); break; // POP_MARK
                case (byte)'2': Push(Top()); break; // DUP
                case (byte)')': Push(PyTuple.Empty); break;
                case (byte)']': Push(new PyList()); break;
                case (byte)'}': Push(new PyDict()); break;
                case 0x8F: Push(new PySet()); break; // EMPTY_SET
                case (byte)'N': Push(null); break;
                case 0x88: Push(true); break;
                case 0x89: Push(false); break;
                case (byte)'J': Push((long)(int)ReadU32()); break; // BININT
                case (byte)'K': Push((long)ReadU8()); break; // BININT1
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(ReadBytes(2, "operand"))); break;
                case 0x8A: Push(ReadLong(ReadU8())); break; // LONG1
                case 0x8B: Push(ReadLong(ReadU32())); break; // LONG4
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(ReadBytes(8, "operand"))); break; // BINFLOAT
                case (byte)'X': Push(Utf8(ReadBytes(ReadU32(), "string"))); break; // BINUNICODE
                case 0x8C: Push(Utf8(ReadBytes(ReadU8(), "string"))); break; // SHORT_BINUNICODE
                case 0x8D: Push(Utf8(ReadBytes(checked((long)Math.Min(ReadU64(), long.MaxValue)), "string"))); break; // BINUNICODE8
                case (byte)'U': Push(Utf8(ReadBytes(ReadU8(), "string"))); break; // SHORT_BINSTRING
                case (byte)'T': Push(Utf8(ReadBytes((int)ReadU32(), "string"))); break; // BINSTRING
                case (byte)'B': Push(ReadBytes(ReadU32(), "bytes")); break; // BINBYTES
                case (byte)'C': Push(ReadBytes(ReadU8(), "bytes")); break; // SHORT_BINBYTES
                case 0x8E: Push(ReadBytes((long)Math.Min(ReadU64(), long.MaxValue), "bytes")); break; // BINBYTES8
                case 0x96: Push(ReadBytes((long)Math.Min(ReadU64(), long.MaxValue), "bytearray")); break; // BYTEARRAY8
                case (byte)'t': Push(new PyTuple(PopMark())); break;
                case 0x85: Push(new PyTuple(Pop())); break;
                case 0x86: { var b = Pop(); var a = Pop(); Push(new PyTuple(a, b)); break; }
                case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new PyTuple(a, b, c)); break; }
                case (byte)'l': Push(new PyList(PopMark())); break; // LIST
                case (byte)'d': // DICT
                    {
                        var items = PopMark();
                        var d = new PyDict();
                        SetItems(d, items);
                        Push(d);
                        break;
                    }
                case 0x91: { var s = new PySet { IsFrozen = true }; s.AddRange(PopMark()); Push(s); break; } // FROZENSET
                case 0x90: // ADDITEMS
                    {
                        var items = PopMark();
                        if (Top() is not PySet s) throw Error($"ADDITEMS on a {PyRepr.TypeName(Top())}, not a set");
                        s.AddRange(items);
                        break;
                    }
                case (byte)'a': // APPEND
                    {
                        var v = Pop();
                        if (Top() is not PyList l) throw Error($"APPEND to a {PyRepr.TypeName(Top())}, not a list");
                        l.Add(v);
                        break;
                    }
                case (byte)'e': // APPENDS
                    {
                        var items = PopMark();
                        if (Top() is not PyList l) throw Error($"APPENDS to a {PyRepr.TypeName(Top())}, not a list");
                        l.AddRange(items);
                        break;
                    }
                case (byte)'s': // SETITEM
                    {
                        var v = Pop();
                        var k = Pop();
                        if (Top() is not PyDict d) throw Error($"SETITEM on a {PyRepr.TypeName(Top())}, not a dict");
                        SetItems(d, [k, v]);
                        break;
                    }
                case (byte)'u': // SETITEMS
                    {
                        var items = PopMark();
                        if (Top() is not PyDict d) throw Error($"SETITEMS on a {PyRepr.TypeName(Top())}, not a dict");
                        SetItems(d, items);
                        break;
                    }
                case (byte)'q': MemoPut(ReadU8()); break; // BINPUT
                case (byte)'r': MemoPut(ReadU32()); break; // LONG_BINPUT
                case 0x94: MemoPut(memo.Count); break; // MEMOIZE
                case (byte)'h': Push(MemoGet(ReadU8())); break; // BINGET
                case (byte)'j': Push(MemoGet(ReadU32())); break; // LONG_BINGET
                case (byte)'c': // GLOBAL
                    {
                        var module = ReadLine("GLOBAL module");
                        var name = ReadLine("GLOBAL name");
                        Push(Globals.Resolve(module, name, file));
                        break;
                    }
                case 0x93: // STACK_GLOBAL
                    {
                        var name = Pop();
                        var module = Pop();
                        if (module is not string m || name is not string n) throw Error("STACK_GLOBAL needs two strings");
                        Push(Globals.Resolve(m, n, file));
                        break;
                    }
                case (byte)'R': // REDUCE
                    {
                        var args = Pop();
                        var callable = Pop();
                        if (args is not PyTuple t) throw Error($"REDUCE arguments are a {PyRepr.TypeName(args)}, not a tuple");
                        Push(Call(callable, t));
                        break;
                    }
                case 0x81: // NEWOBJ
                    {
                        var args = Pop();
                        var cls = Pop();
                        if (args is not PyTuple t) throw Error($"NEWOBJ arguments are a {PyRepr.TypeName(args)}, not a tuple");
                        if (cls is not PyGlobal g || !Globals.IsNewObjClass(g.FullName))
                            throw Error($"NEWOBJ of {PyRepr.Of(cls)} is not allowed");
                        Push(Call(g, t));
                        break;
                    }
                case (byte)'b': // BUILD
                    {
                        var state = Pop();
                        Build(Top(), state);
                        break;
                    }
                case (byte)'Q': // BINPERSID
                    {
                        var pid = Pop();
                        if (pid is not PyTuple t) throw Error($"persistent id is a {PyRepr.TypeName(pid)}, not a tuple");
                        Push(persistentLoad(t));
                        break;
                    }
                default:
                    throw Error(OpcodeMessage(op));
            }
        }
    }

    static string OpcodeMessage(byte op) => op switch
    {
        (byte)'i' => "opcode INST (0x69) is not allowed: it would instantiate an arbitrary class",
        (byte)'o' => "opcode OBJ (0x6F) is not allowed: it would instantiate an arbitrary class",
        0x82 or 0x83 or 0x84 => $"opcode EXT (0x{op:X2}) is not allowed",
        (byte)'P' => "opcode PERSID (0x50) is not supported",
        0x92 => "opcode NEWOBJ_EX (0x92) is not supported",
        0x97 or 0x98 => $"out-of-band buffer opcode 0x{op:X2} is not supported",
        _ => $"unknown or unsupported opcode 0x{op:X2}",
    };

    object ReadLong(long n)
    {
        var b = ReadBytes(n, "LONG");
        if (n == 0) return 0L;
        var v = new BigInteger(b, isUnsigned: false, isBigEndian: false);
        return v >= long.MinValue && v <= long.MaxValue ? (long)v : v;
    }

    void SetItems(PyDict d, object?[] items)
    {
        if (items.Length % 2 != 0) throw Error("odd number of items for a dict");
        for (int i = 0; i < items.Length; i += 2)
        {
            if (!PyDict.IsHashable(items[i])) throw Error($"unhashable dict key of type {PyRepr.TypeName(items[i])}");
            d[items[i]] = items[i + 1];
        }
    }

    void Build(object? target, object? state)
    {
        switch (target)
        {
            case PyDict d:
                if (state is PyTuple { Count: 2 } st) state = st[0]; // (dict state, slot state)
                if (state is null) return;
                if (state is not PyDict sd) throw Error($"BUILD of a dict with a {PyRepr.TypeName(state)} state");
                foreach (var (k, v) in sd)
                {
                    if (k is not string name) throw Error("BUILD attribute name is not a string");
                    d.Attributes[name] = v;
                }
                return;
            case TensorRef:
                return; // NOTE: Python attributes of a tensor (requires_grad, hooks) carry no data Nabla needs.
            default:
                throw Error($"BUILD on a {PyRepr.TypeName(target)} is not allowed");
        }
    }

    object? Call(object? callable, PyTuple args)
    {
        if (callable is not PyGlobal g) throw Error($"REDUCE calls a {PyRepr.TypeName(callable)}, not an allowed global");
        try
        {
            return Globals.Call(g, args, loadFromBytes);
        }
        catch (GlobalCallException e)
        {
            throw Error($"{g.FullName}: {e.Message}");
        }
    }
}

/// <summary>A bad argument to an allowed constructor; the unpickler adds the file and position.</summary>
internal sealed class GlobalCallException(string message) : Exception(message);
