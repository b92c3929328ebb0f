from shimmy.models.textstream import TextStream


def feed_all(stream: TextStream, chunks: list[bytes]) -> str:
    return "".join(stream.feed(c) for c in chunks) + stream.flush()


def test_plain_text_passes_through_at_once():
    stream = TextStream()
    assert stream.feed(b"Hello") == "Hello"
    assert stream.feed(b" world") == " world"
    assert stream.flush() == ""


def test_multibyte_character_split_across_tokens_is_never_broken():
    snowman = "☃".encode()  # three bytes
    stream = TextStream()
    assert stream.feed(b"a" + snowman[:1]) == "a"
    assert stream.feed(snowman[1:2]) == ""
    assert stream.feed(snowman[2:] + b"b") == "☃b"


def test_emoji_split_byte_by_byte():
    data = "héllo 🙂 wörld".encode()
    stream = TextStream()
    pieces = [stream.feed(data[i : i + 1]) for i in range(len(data))]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + stream.flush() == "héllo 🙂 wörld"


def test_stop_string_inside_one_token_cuts_before_it():
    stream = TextStream(["STOP"])
    assert stream.feed(b"abc STOP def") == "abc "
    assert stream.stopped and stream.stop_string == "STOP"
    assert stream.feed(b"more") == ""
    assert stream.flush() == ""


def test_stop_string_spanning_tokens_never_leaks():
    stream = TextStream(["</end>"])
    out = [stream.feed(b"answer </"), stream.feed(b"en"), stream.feed(b"d> tail")]
    assert out == ["answer ", "", ""]
    assert stream.stopped


def test_held_back_prefix_is_released_when_it_does_not_become_a_stop():
    stream = TextStream(["</end>"])
    assert stream.feed(b"a </") == "a "
    assert stream.feed(b"b>") == "</b>"
    assert stream.feed(b" x <") == " x "
    assert stream.flush() == "<"


def test_earliest_of_several_stops_wins():
    stream = TextStream(["world", "lo w"])
    assert feed_all(stream, [b"hello world"]) == "hel"
    assert stream.stop_string == "lo w"


def test_stop_split_into_single_bytes_with_multibyte_stop():
    stop = "終わり"
    data = ("前置き" + stop + "後").encode()
    stream = TextStream([stop])
    text = "".join(stream.feed(data[i : i + 1]) for i in range(len(data)))
    assert text == "前置き"
    assert stream.stopped
