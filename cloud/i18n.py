"""The cloud pages' words in Kazakh, Russian and English, and which language a request gets.

The language comes from ``?lang=`` (kept in a cookie), then the cookie, then the
browser's Accept-Language, then Kazakh. Each string is a (kk, ru, en) row;
``{name}`` placeholders are filled by ``t``. The console's rows live in
``cloud/console/words.py``; the catalogue's and the shared ones here.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Any, Final

from flask import Response, request

LANGS: Final = ("kk", "ru", "en")
DEFAULT: Final = "kk"
COOKIE: Final = "lang"
COOKIE_MAX_AGE: Final = 365 * 24 * 3600  # a year: a reader's phone keeps its language
NAMES: Final = {"kk": "Қазақша", "ru": "Русский", "en": "English"}
MONTHS: Final = {
    "kk": ("қаң", "ақп", "нау", "сәу", "мам", "мау", "шіл", "там", "қыр", "қаз", "қар", "жел"),
    "ru": ("янв", "фев", "мар", "апр", "мая", "июн", "июл", "авг", "сен", "окт", "ноя", "дек"),
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
}

_ROWS: dict[str, tuple[str, str, str]] = {}
_INDEX = {lang: i for i, lang in enumerate(LANGS)}


def register(rows: dict[str, tuple[str, str, str]]) -> None:
    """Add a module's rows (a key defined twice is a mistake worth failing on)."""
    twice = set(rows) & set(_ROWS)
    if twice:
        raise ValueError(f"strings defined twice: {sorted(twice)}")
    _ROWS.update(rows)


def known(key: str) -> bool:
    """True if ``key`` has a row."""
    return key in _ROWS


def t(key: str, lang: str = DEFAULT, **params: Any) -> str:
    """The string ``key`` in ``lang`` with ``{name}`` placeholders filled; the key if unknown."""
    row = _ROWS.get(key)
    text = row[_INDEX.get(lang, 0)] if row else key
    for name, value in params.items():
        text = text.replace("{" + name + "}", str(value))
    return text


def pick(default: str = DEFAULT) -> str:
    """This request's language: ?lang=, then the cookie, then Accept-Language, then default."""
    for candidate in (request.args.get("lang"), request.cookies.get(COOKIE)):
        if candidate in LANGS:
            return candidate
    best = request.accept_languages.best_match(LANGS)
    return best or default


def remember(response: Response, lang: str) -> Response:
    """Keep a language chosen with ?lang= in the cookie."""
    if request.args.get("lang") == lang:
        response.set_cookie(COOKIE, lang, max_age=COOKIE_MAX_AGE, samesite="Lax",
                            httponly=True)
    return response


def day(value: date | datetime | None, lang: str) -> str:
    """A date as people here write it: 22 қар 2026 / 22 ноя 2026 / 22 Nov 2026."""
    if value is None:
        return "—"
    return f"{value.day} {MONTHS.get(lang, MONTHS['en'])[value.month - 1]} {value.year}"


def ago(seconds: float | None, lang: str) -> str:
    """A duration in the largest sensible unit: 45 s, 12 min, 3 h, 2 d."""
    if seconds is None:
        return t("w.never", lang)
    sec = max(0, int(seconds))
    if sec < 60:
        return t("unit.s", lang, n=sec)
    if sec < 3600:
        return t("unit.min", lang, n=sec // 60)
    if sec < 86400:
        return t("unit.h", lang, n=sec // 3600)
    return t("unit.d", lang, n=sec // 86400)


register({
    # -- shared ---------------------------------------------------------------------
    "lang.switch": ("Тіл", "Язык", "Language"),
    "unit.s": ("{n} с", "{n} с", "{n} s"),
    "unit.min": ("{n} мин", "{n} мин", "{n} min"),
    "unit.h": ("{n} сағ", "{n} ч", "{n} h"),
    "unit.d": ("{n} күн", "{n} дн", "{n} d"),
    "w.never": ("ешқашан", "никогда", "never"),
    "w.ago": ("{age} бұрын", "{age} назад", "{age} ago"),
    "w.machine": ("Кітап автоматы", "Книжный автомат", "Book machine"),
    "w.branch": ("Кітапхана", "Библиотека", "Library branch"),
    "w.prev": ("← Алдыңғы", "← Назад", "← Previous"),
    "w.next": ("Келесі →", "Далее →", "Next →"),
    "w.page": ("{page} / {pages} бет", "страница {page} из {pages}",
               "page {page} of {pages}"),
    "w.none": ("Жоқ", "Нет", "None"),
    "w.save": ("Сақтау", "Сохранить", "Save"),
    "w.cancel": ("Бас тарту", "Отменить", "Cancel"),
    "w.search": ("Іздеу", "Найти", "Search"),
    "busy.title": ("Дерекқор бос емес", "База данных занята", "The database is busy"),
    "busy.text": ("Беттер соңғы сақталған деректерді көрсетеді; өзгерістер уақытша тоқтатылды. "
                  "Бір сәттен кейін қайталап көріңіз.",
                  "Страницы показывают последние сохранённые данные; изменения временно "
                  "приостановлены. Попробуйте ещё раз через минуту.",
                  "Pages show the latest saved data; changes are paused for now. "
                  "Please try again in a moment."),
    "busy.failed": ("Ештеңе өзгерген жоқ: дерекқор бос емес. Бір сәттен кейін қайталаңыз.",
                    "Ничего не изменено: база данных занята. Повторите через минуту.",
                    "Nothing was changed: the database is busy. Try again in a moment."),
    "down.title": ("Қызмет уақытша қолжетімсіз", "Сервис временно недоступен",
                   "The service is briefly unavailable"),
    "down.text": ("Дерекқор жауап бермейді. Кітап автоматтары мен кітапханалар оқырмандарға "
                  "қызмет көрсетуді жалғастыруда.",
                  "База данных не отвечает. Автоматы и библиотеки продолжают обслуживать "
                  "читателей.",
                  "The database does not answer. Machines and branches keep serving "
                  "readers."),
    "err.csrf": ("Бет ескірді: оны жаңартып, қайталаңыз.",
                 "Страница устарела: обновите её и повторите.",
                 "This page has expired: reload it and try again."),
    "err.forbidden": ("Бұл әрекетке рұқсатыңыз жоқ.", "У вас нет прав на это действие.",
                      "You are not allowed to do this."),
    "err.notfound": ("Мұндай бет жоқ.", "Такой страницы нет.", "There is no such page."),
})

register({
    # -- the readers' catalogue -----------------------------------------------------
    "app.library": ("Алматы кітапханалары", "Библиотеки Алматы", "Almaty Libraries"),
    "app.catalogue": ("Электрондық каталог", "Электронный каталог", "Online catalogue"),
    "lang.kk": ("қазақша", "казахский", "Kazakh"),
    "lang.ru": ("орысша", "русский", "Russian"),
    "lang.en": ("ағылшынша", "английский", "English"),
    "cat.adult": ("Ересек", "Взрослый", "Adult"),
    "cat.child": ("Бала", "Ребёнок", "Child"),
    "cat.student": ("Студент", "Студент", "Student"),
    "cat.pensioner": ("Зейнеткер", "Пенсионер", "Pensioner"),
    "cat.partner_staff": ("Серіктес қызметкері", "Сотрудник партнёра", "Partner staff"),
    "cat.supported": ("Әлеуметтік қолдау", "Льготная категория", "Supported group"),
    "cat.member": ("Клуб мүшесі", "Член клуба", "Club member"),
    "c.hero": ("Кітапты тауып, жақын жерден алыңыз",
               "Найдите книгу и заберите её там, где удобно",
               "Find a book and pick it up where it suits you"),
    "c.hero_sub": ("28 кітапхана және метро, сауда орталықтары мен ХҚКО-дағы 24 кітап автоматы.",
                   "28 библиотек и 24 книжных автомата в метро, торговых центрах и ЦОНах.",
                   "28 libraries and 24 book machines in metro stations, malls and service "
                   "centres."),
    "c.search_ph": ("Атауы, авторы немесе ISBN", "Название, автор или ISBN",
                    "Title, author or ISBN"),
    "c.hint": ("Кез келген әліпбимен жазыңыз: «абай», «Abai», «ABAY» — бәрі табылады.",
               "Пишите как удобно: «абай», «Abai», «ABAY» — найдётся всё.",
               "Type it any way: “абай”, “Abai”, “ABAY” all find it."),
    "c.language": ("Тілі", "Язык", "Language"),
    "c.any_lang": ("Кез келген тіл", "Любой язык", "Any language"),
    "c.popular": ("Қазір көп оқылатындар", "Сейчас читают", "Popular right now"),
    "c.found": ("«{q}» бойынша {n} атау табылды", "По запросу «{q}» найдено: {n}",
                "{n} titles found for “{q}”"),
    "c.nothing": ("Ештеңе табылмады. Басқаша жазып көріңіз.",
                  "Ничего не найдено. Попробуйте написать иначе.",
                  "Nothing found. Try another spelling."),
    "c.avail_one": ("Қазір бір жерде бар", "Есть сейчас в одном месте",
                    "Available now at one place"),
    "c.avail_n": ("Қазір {places} жерде бар", "Есть сейчас в {places} местах",
                  "Available now at {places} places"),
    "c.more_places": ("тағы {n} жерде", "и ещё в {n} местах", "and {n} more places"),
    "c.all_out": ("Барлық даналар оқырмандарда", "Все экземпляры на руках",
                  "All copies are out"),
    "c.back_by": ("{day} шамасында қайтады", "вернётся около {day}",
                  "expected back around {day}"),
    "c.waiting": ("{n} оқырман күтуде", "ждут читателей: {n}", "readers waiting: {n}"),
    "c.no_copies": ("Бұл атаудың данасы жоқ", "Экземпляров этого издания нет",
                    "The library has no copy of this title"),
    "c.as_of": ("деректер {when}", "данные {when}", "as of {when}"),
    "c.stale_title": ("Бұл жермен байланыс жоқ: деректер ескіруі мүмкін",
                      "С этим местом нет связи: данные могут устареть",
                      "This place is not answering: the figure may be out of date"),
    "c.stale_note": ("Кейбір жерлермен байланыс уақытша жоқ: олардағы сан соңғы хабар бойынша "
                     "көрсетілген.",
                     "С некоторыми местами сейчас нет связи: для них показано последнее "
                     "известное.",
                     "Some places are not answering right now: they show what they last "
                     "reported."),
    "c.not_yet": ("әлі байланыспаған", "ещё не на связи", "not connected yet"),
    "c.live": ("қазір", "сейчас", "live"),
    "c.year": ("Шыққан жылы", "Год издания", "Year"),
    "c.copies": ("Даналар", "Экземпляры", "Copies"),
    "c.copies_line": ("барлығы {total}, оқырмандарда {out}", "всего {total}, на руках {out}",
                      "{total} in all, {out} on loan"),
    "c.title": ("Атауы", "Название", "Title"),
    "c.where": ("Қайдан алуға болады", "Где взять", "Where to get it"),
    "c.n_here": ("{n} дана", "{n} экз.", "{n} here"),
    "c.reserve": ("Брондау", "Бронирование", "Reserve"),
    "c.pickup": ("Қайдан аласыз", "Где заберёте", "Pick up at"),
    "c.opt_here": ("қазір {n} дана", "сейчас {n} экз.", "{n} there now"),
    "c.opt_sent": ("әкеліп береміз", "привезём", "we will bring one"),
    "c.reserve_btn": ("Брондау", "Забронировать", "Reserve"),
    "c.reserve_note": ("Кітап дайын болғанда хабарлаймыз; оны 7 күн сақтаймыз.",
                       "Сообщим, когда книга будет готова; храним её 7 дней.",
                       "We tell you when it is ready; it waits for you for 7 days."),
    "c.login_to_reserve": ("Брондау үшін кіріңіз", "Войдите, чтобы забронировать",
                           "Sign in to reserve"),
    "c.already": ("Сіз бұл кітапты брондадыңыз ({place}).", "Вы уже забронировали эту книгу "
                  "({place}).", "You have reserved this book ({place})."),
    "c.account": ("Жеке кабинет", "Личный кабинет", "My account"),
    "c.reserved.ready": ("Брондалды! Кітап сізді {place} жерінде күтеді.",
                         "Забронировано! Книга ждёт вас: {place}.",
                         "Reserved! The book is waiting for you at {place}."),
    "c.reserved.waiting": ("Брондалды. Кітап {place} жеріне жеткенде хабарлаймыз.",
                           "Забронировано. Сообщим, когда книга будет в {place}.",
                           "Reserved. We will tell you when it reaches {place}."),
    "c.reserve_failed": ("Брондау мүмкін болмады: сізде бұл кітаптың броны бар.",
                         "Не удалось забронировать: у вас уже есть эта бронь.",
                         "Could not reserve: you already have a hold on this book."),
    "c.blocked": ("Карточкаңыз бұғатталған: {reason}. Кітапханаға хабарласыңыз.",
                  "Ваш билет заблокирован: {reason}. Обратитесь в библиотеку.",
                  "Your card is blocked: {reason}. Please contact a library."),
    "c.too_many": ("Бір уақытта {n} броннан артық болмайды.", "Не больше {n} броней "
                   "одновременно.", "At most {n} reservations at a time."),
    "c.login": ("Кіру", "Войти", "Sign in"),
    "c.logout": ("Шығу", "Выйти", "Sign out"),
    "c.join": ("Оқырман болу", "Стать читателем", "Join"),
    "c.login_title": ("Оқырманның жеке кабинеті", "Личный кабинет читателя",
                      "Your reader's account"),
    "c.card": ("Карточка нөмірі", "Номер билета", "Card number"),
    "c.pin": ("PIN-код (4 сан)", "PIN-код (4 цифры)", "PIN (4 digits)"),
    "c.login_btn": ("Кіру", "Войти", "Sign in"),
    "c.login_help": ("PIN-код автоматтағымен бірдей. Карточкаңыз жоқ па?",
                     "PIN-код тот же, что в автомате. Нет билета?",
                     "The same PIN as at the machines. No card yet?"),
    "c.login.wrong": ("Карточка нөмірі немесе PIN-код қате.", "Неверный номер билета или PIN.",
                      "Wrong card number or PIN."),
    "c.login.locked": ("Тым көп қате әрекет: {m} минуттан кейін қайталаңыз.",
                       "Слишком много ошибок: повторите через {m} мин.",
                       "Too many wrong tries: try again in {m} min."),
    "c.my_loans": ("Қолымдағы кітаптар", "Мои книги", "My books"),
    "c.my_holds": ("Броньдарым", "Мои брони", "My reservations"),
    "c.my_debts": ("Қарыздарым", "Мои долги", "What I owe"),
    "c.due_on": ("{day} дейін қайтару", "вернуть до {day}", "due {day}"),
    "c.late_by": ("{n} күн кешікті", "просрочено на {n} дн.", "{n} days late"),
    "c.renew": ("Ұзарту", "Продлить", "Renew"),
    "c.renewed": ("Ұзартылды: {due} дейін.", "Продлено до {due}.", "Renewed until {due}."),
    "c.renew.no_renewals_left": ("Ұзарту мүмкіндігі таусылды.", "Продления исчерпаны.",
                                 "No renewals left."),
    "c.renew.reserved": ("Бұл кітапты басқа оқырман күтуде.", "Эту книгу ждёт другой читатель.",
                         "Another reader is waiting for this book."),
    "c.renew.blocked": ("Карточка бұғатталған.", "Билет заблокирован.", "Your card is blocked."),
    "c.renew.days": ("Ұзарту мүмкін емес.", "Продлить нельзя.", "It cannot be renewed."),
    "c.no_loans": ("Қолыңызда кітап жоқ.", "Книг на руках нет.", "You have no books out."),
    "c.pickup_at": ("Қайдан алу: {place}", "Где забрать: {place}", "Pick up at {place}"),
    "c.ready_until": ("Дайын! {day} дейін алыңыз", "Готова! Заберите до {day}",
                      "Ready! Collect by {day}"),
    "c.in_queue": ("Кезекте: {n}-ші", "В очереди: {n}-й", "In the queue: {n}"),
    "c.no_holds": ("Бронь жоқ.", "Броней нет.", "No reservations."),
    "c.find_book": ("Кітап іздеу", "Найти книгу", "Find a book"),
    "c.cancelled": ("Броньнан бас тартылды.", "Бронь отменена.", "Reservation cancelled."),
    "c.cancel_failed": ("Бас тарту мүмкін болмады.", "Не удалось отменить.",
                        "Could not cancel."),
    "c.owes": ("Қарызыңыз: {amount}", "Ваш долг: {amount}", "You owe {amount}"),
    "c.pay_where": ("Кез келген кітапхананың қабылдау үстелінде төлеуге болады.",
                    "Оплатить можно на кафедре любой библиотеки.",
                    "You can pay at the desk of any library."),
    "c.no_debts": ("Қарызыңыз жоқ. Рақмет!", "Долгов нет. Спасибо!", "Nothing owed. Thank you!"),
    "c.footer": ("Алматы қалалық кітапханалар желісі · кітап қайда алынса да, кез келген жерге "
                 "қайтаруға болады",
                 "Городская сеть библиотек Алматы · книгу можно вернуть в любое место",
                 "Almaty city library network · return a book anywhere"),
    # -- joining ----------------------------------------------------------------------
    "j.title": ("Қалалық оқырмандар клубына қосылыңыз", "Вступите в городской клуб читателей",
                "Join the city's readers' club"),
    "j.lead": ("Өтінімді толтырыңыз, кодты таңдаған кітапханаға әкеліңіз — карточканы сол "
               "жерде береміз. Жеке куәлігіңізді ала келіңіз.",
               "Заполните заявку и принесите код в выбранную библиотеку — там выдадим билет. "
               "Возьмите удостоверение личности.",
               "Fill in the form and bring its code to the library you choose: we issue your "
               "card there. Bring your ID."),
    "j.name": ("Аты-жөніңіз", "Фамилия и имя", "Your full name"),
    "j.contact": ("E-mail немесе телефон (хабарлама үшін)",
                  "E-mail или телефон (для уведомлений)", "E-mail or phone (for notices)"),
    "j.year": ("Туған жылы", "Год рождения", "Year of birth"),
    "j.category": ("Санат", "Категория", "Category"),
    "j.branch": ("Карточканы қай кітапханадан аласыз", "Где получите билет",
                 "Where you will collect the card"),
    "j.pin": ("PIN-код ойлап табыңыз (4 сан)", "Придумайте PIN (4 цифры)",
              "Choose a PIN (4 digits)"),
    "j.pin2": ("PIN-кодты қайталаңыз", "Повторите PIN", "Repeat the PIN"),
    "j.consent": ("Дербес деректерімді кітапхананың өңдеуіне келісемін.",
                  "Согласен(на) на обработку персональных данных библиотекой.",
                  "I agree to the library processing my personal data."),
    "j.submit": ("Өтінім жіберу", "Отправить заявку", "Send the application"),
    "j.bad.name": ("Аты-жөніңізді толық жазыңыз.", "Укажите фамилию и имя полностью.",
                   "Please give your full name."),
    "j.bad.pin": ("PIN-код — 4 сан.", "PIN — это 4 цифры.", "A PIN is 4 digits."),
    "j.bad.pin2": ("PIN-кодтар сәйкес емес.", "PIN-коды не совпадают.", "The PINs differ."),
    "j.bad.year": ("Туған жылы дұрыс емес.", "Неверный год рождения.",
                   "That year of birth is not right."),
    "j.bad.consent": ("Келісім қажет.", "Нужно согласие.", "Your consent is needed."),
    "j.bad.category": ("Санатты таңдаңыз.", "Выберите категорию.", "Choose a category."),
    "j.bad.branch": ("Кітапхананы таңдаңыз.", "Выберите библиотеку.", "Choose a library."),
    "j.done_title": ("Өтінім қабылданды!", "Заявка принята!", "Application received!"),
    "j.done_text": ("{name}, рақмет! Өтінім коды:", "{name}, спасибо! Код заявки:",
                    "Thank you, {name}! Your application code:"),
    "j.bring": ("Осы кодты және жеке куәлікті «{place}» кітапханасына әкеліңіз.",
                "Принесите этот код и удостоверение личности в библиотеку «{place}».",
                "Bring this code and your ID to {place}."),
    "j.pin_kept": ("Таңдаған PIN-код карточкаңызбен бірге жұмыс істейді.",
                   "Выбранный PIN будет работать с вашим билетом.",
                   "The PIN you chose will work with your card."),
})
