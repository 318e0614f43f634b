"""Non-reasoning data: short instructions answered directly (R1 stage 3 mixes these in).

Kinds (the `task` column), each in English and Chinese:
- `number_words`: write a number in words (`47` -> `forty-seven` / `四十七`) or back to digits;
- `translate`: translate a short phrase between English and Chinese;
- `formatting`: upper-case a phrase, sort words, join items with commas, sort numbers, count letters;
- `greeting`: hello / who are you / thanks, with fixed friendly replies.

The response is `<think>\\n<one line restating the request>\\n</think> <answer>reply</answer>`: no
working, but the same response format as every other row, so the format reward (which wants a
non-empty think block), the language reward and answer extraction all work on it.
Rows use the task-row schema (`difficulty` 1, no tests, `mixed_language` False).
"""

from __future__ import annotations

import random

from data.problem import Problem
from data.traces import Step

ONES_EN = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
           "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS_EN = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
DIGITS_ZH = "零一二三四五六七八九"


def number_to_english(n: int) -> str:
    """0..9999 in English words: 47 -> forty-seven, 305 -> three hundred five."""
    assert 0 <= n < 10000
    if n < 20:
        return ONES_EN[n]
    if n < 100:
        return TENS_EN[n // 10] + ("" if n % 10 == 0 else "-" + ONES_EN[n % 10])
    if n < 1000:
        head = f"{ONES_EN[n // 100]} hundred"
        return head if n % 100 == 0 else f"{head} {number_to_english(n % 100)}"
    head = f"{ONES_EN[n // 1000]} thousand"
    return head if n % 1000 == 0 else f"{head} {number_to_english(n % 1000)}"


def number_to_chinese(n: int) -> str:
    """0..9999 in Chinese numerals: 10 -> 十, 15 -> 十五, 105 -> 一百零五, 1010 -> 一千零一十."""
    assert 0 <= n < 10000
    if n < 10:
        return DIGITS_ZH[n]
    if n < 20:
        return "十" + ("" if n == 10 else DIGITS_ZH[n - 10])
    units = ((1000, "千"), (100, "百"), (10, "十"), (1, ""))
    out, zero_pending, started = "", False, False
    for value, unit in units:
        d = (n // value) % 10
        if d == 0:
            zero_pending = started
            continue
        if zero_pending:
            out += "零"
            zero_pending = False
        out += DIGITS_ZH[d] + unit
        started = True
    return out


PHRASES = (  # (English, Chinese)
    ("hello", "你好"), ("good morning", "早上好"), ("good night", "晚安"), ("thank you", "谢谢"),
    ("goodbye", "再见"), ("see you tomorrow", "明天见"), ("I am hungry", "我饿了"), ("I love you", "我爱你"),
    ("red", "红色"), ("blue", "蓝色"), ("green", "绿色"), ("yellow", "黄色"), ("black", "黑色"), ("white", "白色"),
    ("cat", "猫"), ("dog", "狗"), ("bird", "鸟"), ("fish", "鱼"), ("horse", "马"), ("tiger", "老虎"),
    ("apple", "苹果"), ("banana", "香蕉"), ("rice", "米饭"), ("water", "水"), ("tea", "茶"), ("milk", "牛奶"),
    ("book", "书"), ("pen", "笔"), ("table", "桌子"), ("chair", "椅子"), ("door", "门"), ("window", "窗户"),
    ("sun", "太阳"), ("moon", "月亮"), ("star", "星星"), ("rain", "雨"), ("snow", "雪"), ("wind", "风"),
    ("school", "学校"), ("teacher", "老师"), ("student", "学生"), ("friend", "朋友"), ("family", "家人"),
    ("mother", "妈妈"), ("father", "爸爸"), ("city", "城市"), ("river", "河"), ("mountain", "山"),
    ("today", "今天"), ("tomorrow", "明天"), ("yesterday", "昨天"), ("morning", "早上"), ("evening", "晚上"),
    ("big", "大"), ("small", "小"), ("hot", "热"), ("cold", "冷"), ("happy", "快乐"), ("fast", "快"),
    ("computer", "电脑"), ("phone", "手机"), ("music", "音乐"), ("game", "游戏"), ("number", "数字"),
    ("how are you", "你好吗"), ("what time is it", "几点了"), ("where is the station", "车站在哪里"),
    ("nice to meet you", "很高兴认识你"), ("happy birthday", "生日快乐"), ("I like tea", "我喜欢茶"),
)
WORDS = ("apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach", "pear", "plum",
         "cat", "dog", "fox", "lion", "owl", "zebra", "red", "blue", "green", "pink")


def _number_words(rng: random.Random) -> Problem:
    n = rng.choice((rng.randint(0, 20), rng.randint(21, 99), rng.randint(100, 999), rng.randint(1000, 9999)))
    en_w, zh_w = number_to_english(n), number_to_chinese(n)
    if rng.random() < 0.5:  # digits -> words; the answer is in the prompt's language
        return Problem("number_words", 1, f"number_words:to_words:{n}",
                       {"en": f"Write {n} in words.", "zh": f"用汉字写出 {n}。"}, [], answer=en_w), {"en": en_w, "zh": zh_w}
    return Problem("number_words", 1, f"number_words:to_digits:{n}",
                   {"en": f"Write \"{en_w}\" as a number.", "zh": f"把“{zh_w}”写成阿拉伯数字。"}, [],
                   answer=str(n)), None


def _translate(rng: random.Random):
    en, zh = rng.choice(PHRASES)
    if rng.random() < 0.5:  # English phrase -> Chinese
        return Problem("translate", 1, f"translate:to_zh:{en}",
                       {"en": f"Translate into Chinese: {en}", "zh": f"把“{en}”翻译成中文。"}, [], answer=zh), None
    return Problem("translate", 1, f"translate:to_en:{zh}",
                   {"en": f"Translate into English: {zh}", "zh": f"把“{zh}”翻译成英文。"}, [], answer=en), None


def _formatting(rng: random.Random):
    kind = rng.randrange(5)
    if kind == 0:
        words = " ".join(rng.sample(WORDS, rng.randint(2, 4)))
        return Problem("formatting", 1, f"formatting:upper:{words}",
                       {"en": f"Write in capital letters: {words}", "zh": f"把下面的内容改成大写：{words}"}, [],
                       answer=words.upper()), None
    if kind == 1:
        words = rng.sample(WORDS, rng.randint(3, 5))
        shown = " ".join(words)
        return Problem("formatting", 1, f"formatting:sort_words:{shown}",
                       {"en": f"Sort these words alphabetically: {shown}", "zh": f"把这些单词按字母顺序排列：{shown}"}, [],
                       answer=" ".join(sorted(words))), None
    if kind == 2:
        words = rng.sample(WORDS, rng.randint(2, 5))
        shown = " ".join(words)
        return Problem("formatting", 1, f"formatting:commas:{shown}",
                       {"en": f"Join these words with commas: {shown}", "zh": f"用逗号连接这些单词：{shown}"}, [],
                       answer=", ".join(words)), None
    if kind == 3:
        nums = [rng.randint(0, 99) for _ in range(rng.randint(3, 6))]
        shown = " ".join(map(str, nums))
        return Problem("formatting", 1, f"formatting:sort_numbers:{shown}",
                       {"en": f"Put these numbers in increasing order: {shown}", "zh": f"把这些数从小到大排列：{shown}"}, [],
                       answer=" ".join(map(str, sorted(nums)))), None
    word = rng.choice(WORDS)
    return Problem("formatting", 1, f"formatting:letters:{word}",
                   {"en": f"How many letters are in the word \"{word}\"?", "zh": f"单词“{word}”有几个字母？"}, [],
                   answer=str(len(word))), None


GREETINGS = (  # (key, en prompt, zh prompt, en reply, zh reply)
    ("hello", "Hello!", "你好！", "Hello! How can I help you?", "你好！有什么可以帮你的吗？"),
    ("hi", "Hi there.", "嗨。", "Hi! What would you like to do?", "嗨！你想做什么？"),
    ("who", "Who are you?", "你是谁？", "I am a small assistant model trained with rlpipe.", "我是用 rlpipe 训练的小型助手模型。"),
    ("can", "What can you do?", "你能做什么？", "I can do arithmetic, solve equations and countdown puzzles, and write small Python programs.",
     "我会算术、解方程、玩凑数游戏，还会写简单的 Python 程序。"),
    ("thanks", "Thank you!", "谢谢你！", "You are welcome!", "不客气！"),
    ("bye", "Goodbye.", "再见。", "Goodbye! Have a nice day.", "再见！祝你今天愉快。"),
)


def _greeting(rng: random.Random):
    key, en_p, zh_p, en_r, zh_r = rng.choice(GREETINGS)
    return Problem("greeting", 1, f"greeting:{key}", {"en": en_p, "zh": zh_p}, [], answer=en_r), {"en": en_r, "zh": zh_r}


KINDS = (_number_words, _translate, _formatting, _greeting)

# The one-line think of a direct answer: it restates the request and does no working. Format
# rewards want a non-empty think block, and the line is in the prompt's language so the
# language-consistency reward reads it as such (the phrase itself is never quoted here).
RESTATE = {
    "number_words:to_words": Step("Write the number in words.", "把这个数写成汉字。"),
    "number_words:to_digits": Step("Write the number in digits.", "把这个数写成阿拉伯数字。"),
    "translate:to_zh": Step("Translate the phrase into Chinese.", "把这个短语翻译成中文。"),
    "translate:to_en": Step("Translate the phrase into English.", "把这个短语翻译成英文。"),
    "formatting:upper": Step("Write it in capital letters.", "改成大写字母。"),
    "formatting:sort_words": Step("Sort the words from a to z.", "按字母顺序排列单词。"),
    "formatting:commas": Step("Join the words with commas.", "用逗号连接单词。"),
    "formatting:sort_numbers": Step("Sort the numbers from small to large.", "把数从小到大排列。"),
    "formatting:letters": Step("Count the letters.", "数一数字母。"),
    "greeting": Step("Reply politely.", "礼貌地回复。"),
}


def generate(rng: random.Random, language: str) -> tuple[Problem, str | None]:
    """One non-reasoning problem whose answer suits `language` (`steps` is empty), and the reply
    in the other language when the reply depends on the language (else None)."""
    problem, by_language = rng.choice(KINDS)(rng)
    kind = problem.key.split(":")[0] if problem.task == "greeting" else ":".join(problem.key.split(":")[:2])
    problem.steps = [RESTATE[kind]]
    if by_language is None:
        return problem, None
    problem.answer = by_language[language]
    problem.key += f":{language}"
    return problem, by_language["zh" if language == "en" else "en"]
