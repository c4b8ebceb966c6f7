"""The kiosk's and the desk's words in Kazakh, Russian and English, and which one to speak.

The language comes from ``?lang=`` (remembered in a cookie), then the cookie,
then the browser's Accept-Language (the desk; a public kiosk ignores it), then
Kazakh. Each string is a (kk, ru, en) row; ``{name}`` placeholders are filled
by ``t`` on the server and by the same rule in the pages' scripts.
"""
from __future__ import annotations

from typing import Any, Final

from flask import Response, request

LANGS: Final = ("kk", "ru", "en")
DEFAULT: Final = "kk"
COOKIE: Final = "lang"
# A year: a branch's desk PC or a machine's screen keeps its language.
COOKIE_MAX_AGE: Final = 365 * 24 * 3600
NAMES: Final = {"kk": "Қазақша", "ru": "Русский", "en": "English"}

_ROWS: dict[str, tuple[str, str, str]] = {
    # -- shared -----------------------------------------------------------------
    "app.kiosk": ("Кітап автоматы", "Книжный автомат", "Book machine"),
    "app.desk": ("Кітапхана пульті", "Кафедра выдачи", "Library desk"),
    "lang.switch": ("Тіл", "Язык", "Language"),
    "info.node": ("Түйін", "Узел", "Node"),
    "info.data": ("деректер {age} бұрын", "данные {age} назад", "data {age} old"),
    "info.never": ("деректер әлі келмеген", "данных ещё нет", "no data yet"),
    "info.online": ("желіде", "в сети", "online"),
    "info.offline": ("желіден тыс", "нет связи", "offline"),
    "unit.s": ("{n} с", "{n} с", "{n} s"),
    "unit.min": ("{n} мин", "{n} мин", "{n} min"),
    "unit.h": ("{n} сағ", "{n} ч", "{n} h"),
    "unit.d": ("{n} күн", "{n} дн", "{n} d"),
    "btn.done": ("Аяқтау", "Завершить", "Done"),
    "btn.back": ("Артқа", "Назад", "Back"),
    "btn.cancel": ("Бас тарту", "Отмена", "Cancel"),
    "btn.ok": ("Жарайды", "Понятно", "OK"),
    "err.network": ("Түйін жауап бермейді. Қайталап көріңіз.",
                    "Узел не отвечает. Попробуйте ещё раз.",
                    "This node does not answer. Please try again."),
    # -- refusal reasons by code (short, neutral: the desk shows them as titles) --
    "r.unknown_reader": ("Карточка белгісіз", "Билет неизвестен", "Unknown card"),
    "r.blocked": ("Карточка бұғатталған", "Билет заблокирован", "Card blocked"),
    "r.unknown_copy": ("Дана белгісіз", "Экземпляр неизвестен", "Unknown copy"),
    "r.on_loan": ("Дана қазір оқырманда", "Экземпляр уже выдан", "Copy already on loan"),
    "r.not_here": ("Дана бұл жерде емес", "Экземпляра здесь нет", "Copy not at this location"),
    "r.held_for_other": ("Басқа оқырманға брондалған", "Забронирован другим читателем",
                         "Reserved for another reader"),
    "r.limit": ("Кітап шегі толды", "Лимит книг исчерпан", "Loan limit reached"),
    "r.offline_cap": ("Байланыссыз жұмыс шегі", "Лимит при работе без связи",
                      "Offline loan limit"),
    "r.no_renewals_left": ("Ұзарту мүмкіндігі таусылды", "Продления исчерпаны",
                           "No renewals left"),
    "r.reserved": ("Бұл кітапты басқа оқырман күтуде", "Эту книгу ждёт другой читатель",
                   "Another reader is waiting for it"),
    "r.unknown_loan": ("Мұндай берілім жоқ", "Такой выдачи нет", "No such loan"),
    "r.card_taken": ("Карточка бұрын берілген", "Билет уже выдан", "Card already issued"),
    "r.not_ready": ("Бронь әлі дайын емес", "Бронь ещё не готова", "Hold not ready yet"),
    "r.pin_locked": ("Карточка уақытша бұғатталды", "Билет временно заблокирован",
                     "Card locked for a while"),
    "r.pin_required": ("PIN-код енгізілмеген", "PIN-код не введён", "PIN not entered"),
    "r.no_card": ("Карточка оқылмады", "Билет не приложен", "No card at the reader"),
    "r.jam": ("Кітап кептеліп қалды", "Книга застряла", "The book got stuck"),
    "r.empty_slot": ("Ұяшық бос", "Ячейка пуста", "The slot is empty"),
    "r.not_taken": ("Кітап уақытында алынбады", "Книгу не забрали вовремя",
                    "The book was not taken in time"),
    "r.machine_offline": ("Автомат жауап бермейді", "Автомат не отвечает",
                          "The machine does not answer"),
    "r.outcome_unknown": ("Автомат жауап беруді тоқтатты", "Автомат перестал отвечать",
                          "The machine stopped answering"),
    "r.slot_out_of_order": ("Бұл ұяшық уақытша істемейді", "Эта ячейка временно не работает",
                            "That slot is out of order"),
    "r.machine_busy": ("Автомат бос емес", "Автомат занят", "The machine is busy"),
    "r.service": ("Автоматқа қызмет көрсетілуде", "Автомат на обслуживании",
                  "The machine is being serviced"),
    "r.machine_error": ("Автомат қатесі", "Ошибка автомата", "Machine error"),
    "r.invalid": ("Өрістерді тексеріңіз", "Проверьте поля формы", "Check the form"),
    "r.refused": ("Бас тартылды", "Отказано", "Refused"),
    # -- the kiosk ----------------------------------------------------------------
    "k.idle.title": ("Карточкаңызды оқу құрылғысына жақындатыңыз",
                     "Приложите читательский билет к считывателю",
                     "Hold your library card to the reader"),
    "k.idle.step1": ("Карточка", "Билет", "Card"),
    "k.idle.step2": ("PIN-код", "PIN-код", "PIN"),
    "k.idle.step3": ("Кітапты таңдаңыз", "Выберите книгу", "Choose a book"),
    "k.idle.step4": ("Есіктен алыңыз", "Заберите из окна", "Take it from the door"),
    "k.return.title": ("Кітапты қайтарасыз ба?", "Возвращаете книгу?", "Returning a book?"),
    "k.return.text": ("Оны қайтару саңылауына салыңыз — экранның қажеті жоқ. Желінің кез "
                      "келген кітабын кез келген автоматқа не кітапханаға қайтаруға болады.",
                      "Опустите её в окно возврата — экран не нужен. Любую книгу сети можно "
                      "вернуть в любой автомат или библиотеку.",
                      "Put it in the return slot — no need for the screen. Any book of the "
                      "network can be returned at any machine or library."),
    "k.return.closed": ("Қайтару саңылауы уақытша жабық. Кітапты басқа автоматқа немесе "
                        "кітапханаға қайтарыңыз.",
                        "Окно возврата временно закрыто. Верните книгу в другой автомат "
                        "или библиотеку.",
                        "The return slot is closed for now. Please return books at another "
                        "machine or library."),
    "k.pin.title": ("PIN-кодты енгізіңіз", "Введите PIN-код", "Enter your PIN"),
    "k.pin.card": ("Карточка {card}", "Билет {card}", "Card {card}"),
    "k.pin.clear": ("Өшіру", "Стереть", "Clear"),
    "k.pin.ok": ("Растау", "Готово", "OK"),
    "k.pin.wrong": ("PIN-код қате. Тағы {n} әрекет қалды.",
                    "Неверный PIN-код. Осталось попыток: {n}.",
                    "Wrong PIN. {n} tries left."),
    "k.pin.hint": ("Оны ешкімге көрсетпеңіз.", "Никому его не показывайте.",
                   "Keep it covered."),
    "k.nopin.title": ("Карточкаға PIN-код орнатылмаған", "У билета нет PIN-кода",
                      "This card has no PIN yet"),
    "k.nopin.text": ("PIN-кодты кез келген кітапханада орнатуға болады.",
                     "PIN-код можно установить в любой библиотеке сети.",
                     "A PIN can be set at any library desk of the network."),
    "k.locked.title": ("Карточка бұғатталды", "Билет заблокирован", "Card locked"),
    "k.locked.text": ("PIN-код үш рет қате терілді. Қауіпсіздік үшін карточка бұл автоматта "
                      "{m} минутқа бұғатталды. PIN-кодты ұмытсаңыз, кітапханашыға жүгініңіз.",
                      "PIN-код трижды введён неверно. Для безопасности билет заблокирован "
                      "на этом автомате на {m} мин. Если вы забыли PIN-код, обратитесь к "
                      "библиотекарю.",
                      "The PIN was wrong three times. For your safety this card is locked "
                      "at this machine for {m} minutes. Forgot your PIN? Ask a librarian."),
    "k.unknown.title": ("Карточка танылмады", "Билет не распознан", "Card not recognised"),
    "k.unknown.text": ("Бұл карточка автоматқа белгісіз. Кітапханаға жүгініңіз — карточканы "
                       "сонда тіркейді.",
                       "Этот билет автомату неизвестен. Обратитесь в библиотеку — там его "
                       "зарегистрируют.",
                       "This machine does not know this card. Please ask at a library desk, "
                       "where cards are issued."),
    "k.books.hello": ("Сәлеметсіз бе, {name}!", "Здравствуйте, {name}!", "Hello, {name}!"),
    "k.books.title": ("Кітапты таңдаңыз", "Выберите книгу", "Choose a book"),
    "k.books.count": ("Сізде {n} кітап бар, рұқсат етілгені — {max}.",
                      "У вас книг: {n} из {max} возможных.",
                      "You have {n} of {max} books allowed."),
    "k.books.reserved": ("Сіздің броныңыз", "Ваша бронь", "Reserved for you"),
    "k.books.copies": ("{n} дана", "{n} экз.", "{n} copies"),
    "k.books.none": ("Бұл автоматта қазір сізге қолжетімді кітап жоқ.",
                     "Сейчас в этом автомате нет доступных вам книг.",
                     "There are no books in this machine you can take right now."),
    "k.books.loading": ("Жүктелуде…", "Загрузка…", "Loading…"),
    "k.confirm.title": ("Осы кітапты аласыз ба?", "Взять эту книгу?", "Take this book?"),
    "k.confirm.take": ("Иә, беріңіз", "Да, выдать", "Yes, dispense it"),
    "k.dispense.title": ("Кітап берілуде…", "Выдаём книгу…", "Dispensing your book…"),
    "k.dispense.text": ("Кітапты төмендегі беру есігінен алыңыз.",
                        "Заберите книгу из окна выдачи внизу.",
                        "Take your book from the delivery door below."),
    "k.receipt.head": ("ТҮБІРТЕК", "ЧЕК", "RECEIPT"),
    "k.receipt.thanks": ("Оқуыңыз сәтті болсын!", "Приятного чтения!", "Happy reading!"),
    "k.receipt.book": ("Кітап", "Книга", "Book"),
    "k.receipt.barcode": ("Штрихкод", "Штрихкод", "Barcode"),
    "k.receipt.due": ("Қайтару мерзімі", "Вернуть до", "Due back"),
    "k.receipt.reader": ("Оқырман", "Читатель", "Reader"),
    "k.receipt.node": ("Орны", "Место", "Location"),
    "k.receipt.time": ("Уақыты", "Время", "Time"),
    "k.receipt.note": ("Кітапты желінің кез келген автоматына не кітапханасына қайтаруға "
                       "болады.",
                       "Книгу можно вернуть в любой автомат или библиотеку сети.",
                       "Return it at any machine or library of the network."),
    "k.receipt.another": ("Тағы кітап алу", "Взять ещё книгу", "Take another book"),
    "k.receipt.closing": ("{n} секундтан кейін басты бетке оралады",
                          "Возврат на главный экран через {n} с",
                          "Back to the start in {n} s"),
    "k.ended.title": ("Сеанс аяқталды", "Сеанс завершён", "Session ended"),
    "k.ended.text": ("Ұзақ уақыт әрекет болмады. Жалғастыру үшін карточкаңызды қайта "
                     "жақындатыңыз.",
                     "Долго не было действий. Чтобы продолжить, приложите билет снова.",
                     "Nothing happened for a while. Hold your card to the reader again to "
                     "continue."),
    "k.idlewarn": ("Сеанс {n} секундтан кейін аяқталады. Жалғастыру үшін экранды түртіңіз.",
                   "Сеанс закончится через {n} с. Коснитесь экрана, чтобы продолжить.",
                   "Your session ends in {n} s. Touch the screen to continue."),
    "k.oos.text": ("Кешірім сұраймыз, қызметкерлерге хабарланды. Кітапты жақын маңдағы "
                   "кітапханадан немесе басқа автоматтан алуға болады.",
                   "Приносим извинения, персонал уведомлён. Книгу можно взять в ближайшей "
                   "библиотеке или в другом автомате.",
                   "Sorry — staff have been notified. You can borrow at a nearby library or "
                   "another machine."),
    "k.off.back": ("Автомат қайта жауап бергенде бұл экран өзі жаңарады.",
                   "Экран вернётся сам, когда автомат снова ответит.",
                   "This screen comes back by itself when the machine answers again."),
    "k.svc.text": ("Кітапханашы автоматқа қызмет көрсетіп жатыр. Бірнеше минуттан кейін "
                   "қайта келіңіз.",
                   "Библиотекарь обслуживает автомат. Подойдите через несколько минут.",
                   "A librarian is servicing this machine. Please come back in a few minutes."),
    "k.settle.title": ("Бір сәт…", "Одну минуту…", "One moment…"),
    "k.settle.text": ("Автомат қайта байланысқа шықты және соңғы жұмысын тексеріп жатыр.",
                      "Автомат снова на связи и проверяет свою последнюю операцию.",
                      "The machine is back and is checking its last operation."),
    "k.oos.returns_open": ("Кітапты қайтаруға болады: оны қайтару саңылауына салыңыз.",
                           "Книгу можно вернуть: опустите её в окно возврата.",
                           "You can still return a book: put it in the return slot."),
    "k.nomachine.title": ("Бұл түйінде автомат жоқ", "У этого узла нет автомата",
                          "This node has no machine"),
    "k.fault.choose": ("Басқа кітап таңдау", "Выбрать другую книгу", "Choose another book"),
    "k.fault.askstaff": ("Қайталанса, кітапханашыға хабарласыңыз.",
                         "Если это повторится, сообщите библиотекарю.",
                         "If it happens again, please tell a librarian."),
    "k.t.blocked": ("Себебі: {reason}. Кітапханашыға жүгініңіз.",
                    "Причина: {reason}. Обратитесь к библиотекарю.",
                    "Reason: {reason}. Please see a librarian."),
    "k.t.limit": ("Сізде {n} кітап бар, рұқсат етілгені — {max}. Біреуін қайтарсаңыз, "
                  "жаңасын ала аласыз.",
                  "У вас {n} книг из {max} возможных. Верните одну — и сможете взять новую.",
                  "You have {n} of the {max} books allowed. Return one and you can take "
                  "another."),
    "k.t.offline_cap": ("Автомат {h} сағаттан бері желіге қосылмаған, сондықтан әр оқырманға "
                        "{max} кітаптан артық бермейді. Кітапханадан алуға болады.",
                        "Автомат без связи уже {h} ч, поэтому выдаёт не больше {max} книг "
                        "на читателя. Книгу можно взять в библиотеке.",
                        "This machine has been offline for {h} hours, so it lends at most "
                        "{max} books per reader. A library desk can lend more."),
    "k.t.unknown_reader": ("Бұл карточка автоматқа белгісіз.",
                           "Этот билет автомату неизвестен.",
                           "This machine does not know this card."),
    "k.t.jam": ("Кітап берілмеді және сізге жазылмады. Қызметкерлерге хабарланды.",
                "Книга не выдана и на вас не записана. Персонал уведомлён.",
                "The book was not dispensed and is not on your card. Staff are notified."),
    "k.t.empty_slot": ("Бұл кітап автоматта табылмады. Ол сізге жазылмады.",
                       "Этой книги не оказалось в автомате. На вас она не записана.",
                       "That book was not in the machine after all. It is not on your card."),
    "k.t.not_taken": ("Кітап автоматқа қайтарылды және сізге жазылмады.",
                      "Книга вернулась в автомат и на вас не записана.",
                      "The book went back into the machine and is not on your card."),
    "k.t.outcome_unknown": ("Кітап шықса, ол сізге жазылады — түбіртек кейін келеді. "
                            "Шықпаса, ештеңе жазылмайды.",
                            "Если книга вышла, она записана на вас — это будет видно в "
                            "кабинете читателя. Если нет, ничего не записано.",
                            "If the book came out it is lent to you and will show in your "
                            "account; if not, nothing is recorded."),
    "k.t.slot_out_of_order": ("Бұл кітап тұрған ұяшық уақытша істемейді. Басқа кітап "
                              "таңдаңыз.",
                              "Ячейка с этой книгой временно не работает. Выберите другую "
                              "книгу.",
                              "The slot holding this book is out of order. Please choose "
                              "another book."),
    "k.t.machine_busy": ("Автомат алдыңғы берілімді аяқтап жатыр. Сәлден соң қайталаңыз.",
                         "Автомат завершает предыдущую выдачу. Попробуйте через минуту.",
                         "The machine is finishing the previous loan. Try again in a moment."),
    "k.t.generic": ("Кітап берілмеді. Кітапханашыға жүгініңіз.",
                    "Книга не выдана. Обратитесь к библиотекарю.",
                    "The book was not lent. Please see a librarian."),
    # -- the desk -----------------------------------------------------------------
    "d.login.title": ("Қызметкердің кіруі", "Вход для сотрудников", "Staff login"),
    "d.login.user": ("Пайдаланушы", "Пользователь", "User name"),
    "d.login.password": ("Құпиясөз", "Пароль", "Password"),
    "d.login.submit": ("Кіру", "Войти", "Log in"),
    "d.login.failed": ("Кіру сәтсіз аяқталды", "Вход не выполнен", "Login failed"),
    "d.logout": ("Шығу", "Выйти", "Log out"),
    "d.expired": ("Сеанс аяқталды — қайта кіріңіз.", "Сеанс истёк — войдите снова.",
                  "Your session has ended — please log in again."),
    "d.link.on": ("Желі: қосулы", "Связь: есть", "Link: online"),
    "d.link.off": ("Желі жоқ — жергілікті жұмыс", "Связи нет — работаем локально",
                   "Offline — working locally"),
    "d.outbox": ("Жіберу кезегі: {n}", "Очередь отправки: {n}", "Outbox: {n}"),
    "d.fresh": ("Деректер: {age} бұрын", "Данные: {age} назад", "Data: {age} old"),
    "d.checkout": ("Кітап беру", "Выдача", "Check out"),
    "d.checkin": ("Кітап қабылдау", "Приём", "Check in"),
    "d.card": ("Оқырман карточкасы", "Билет читателя", "Reader card"),
    "d.barcode": ("Дана штрихкоды", "Штрихкод экземпляра", "Copy barcode"),
    "d.scan": ("Сканерлеңіз немесе теріп, Enter басыңыз",
               "Отсканируйте или введите и нажмите Enter", "Scan, or type and press Enter"),
    "d.go.checkout": ("Беру", "Выдать", "Check out"),
    "d.go.checkin": ("Қабылдау", "Принять", "Check in"),
    "d.ok.checkout": ("Берілді: «{title}» ({copy}) — {card}, мерзімі {due}",
                      "Выдано: «{title}» ({copy}) — {card}, вернуть до {due}",
                      "Checked out: “{title}” ({copy}) to {card}, due {due}"),
    "d.ok.checkin": ("Қабылданды: {copy}", "Принято: {copy}", "Checked in: {copy}"),
    "d.ok.checkin_unknown": ("Қабылданды: {copy} (бұл түйінге бұрын белгісіз дана)",
                             "Принято: {copy} (экземпляр раньше не был известен узлу)",
                             "Checked in: {copy} (a copy this node had not seen before)"),
    "d.route.shelf": ("Сөреге қойыңыз.", "Поставьте на полку.", "Put it on the shelf."),
    "d.route.hold_here": ("Брондау сөресіне қойыңыз: {reader}.",
                          "На полку брони: {reader}.", "Put it on the hold shelf: {reader}."),
    "d.route.hold_elsewhere": ("{to} жіберіңіз: ондағы оқырман күтіп отыр.",
                               "Отправьте в {to}: там его ждёт читатель.",
                               "Send it to {to}: a reader is waiting for it there."),
    "d.route.home": ("Үйіне қайтарыңыз: {to}.", "Верните домой: {to}.",
                     "Send it home to {to}."),
    "d.route.unknown": ("Бұл түйін бұл дананы білмейді: қызметкерлерге қалдырыңыз.",
                        "Узел не знает этот экземпляр: отложите для сотрудников.",
                        "This node does not know the copy: set it aside for staff."),
    "d.reader": ("Оқырман", "Читатель", "Reader"),
    "d.lookup": ("Табу", "Найти", "Look up"),
    "d.category": ("Санаты", "Категория", "Category"),
    "d.owes": ("Қарызы", "Задолженность", "Owes"),
    "d.loans_count": ("Қолындағы кітап (желі бойынша)", "Книг на руках (по сети)",
                      "Books on loan (network)"),
    "d.status": ("Күйі", "Статус", "Status"),
    "d.active": ("Белсенді", "Активен", "Active"),
    "d.as_of": ("осы түйінде белгілі, {t} жағдайы бойынша", "по данным этого узла на {t}",
                "as known here, as of {t}"),
    "d.as_of_never": ("осы түйінде белгілі; бұлтпен әлі синхрондалмаған",
                      "по данным этого узла; с облаком ещё не сверялся",
                      "as known here; not yet synced with the cloud"),
    "d.loans": ("Қолындағы кітаптар", "Книги на руках", "Loans"),
    "d.holds": ("Брондар", "Брони", "Holds"),
    "d.none": ("Жоқ", "Нет", "None"),
    "d.col.title": ("Атауы", "Название", "Title"),
    "d.col.copy": ("Дана", "Экземпляр", "Copy"),
    "d.col.due": ("Мерзімі", "Вернуть до", "Due"),
    "d.col.renewals": ("Ұзарту", "Продлений", "Renewals"),
    "d.col.reader": ("Оқырман", "Читатель", "Reader"),
    "d.col.status": ("Күйі", "Статус", "Status"),
    "d.col.expires": ("Сақталады", "Хранится до", "Kept until"),
    "d.renew": ("Ұзарту", "Продлить", "Renew"),
    "d.ok.renew": ("Ұзартылды: {copy}, жаңа мерзімі {due}", "Продлено: {copy}, до {due}",
                   "Renewed: {copy}, now due {due}"),
    "d.hold.ready": ("Дайын", "Готова", "Ready"),
    "d.hold.waiting": ("Күтуде", "Ожидает", "Waiting"),
    "d.holds_here": ("Осы жерде берілетін брондар", "Брони к выдаче здесь",
                     "Holds to hand out here"),
    "d.refresh": ("Жаңарту", "Обновить", "Refresh"),
    "d.handout": ("Беру", "Выдать", "Hand out"),
    "d.ok.handout": ("Берілді: «{title}» — {card}, мерзімі {due}",
                     "Выдано по брони: «{title}» — {card}, вернуть до {due}",
                     "Handed out: “{title}” to {card}, due {due}"),
    "d.register": ("Жаңа оқырман", "Новый читатель", "New reader"),
    "d.reg.card": ("Жаңа карточка нөмірі", "Номер нового билета", "New card number"),
    "d.reg.name": ("Аты-жөні", "ФИО", "Full name"),
    "d.reg.pin": ("PIN-код (4 сан)", "PIN-код (4 цифры)", "PIN (4 digits)"),
    "d.reg.submit": ("Тіркеп, карточка беру", "Зарегистрировать и выдать билет",
                     "Register and issue card"),
    "d.ok.register": ("Тіркелді: {name}, карточка {card}", "Зарегистрирован: {name}, билет {card}",
                      "Registered: {name}, card {card}"),
    "d.cat.adult": ("Ересек", "Взрослый", "Adult"),
    "d.cat.child": ("Бала", "Ребёнок", "Child"),
    "d.cat.student": ("Студент", "Студент", "Student"),
    "d.cat.pensioner": ("Зейнеткер", "Пенсионер", "Pensioner"),
    "d.cat.partner_staff": ("Серіктес қызметкері", "Сотрудник партнёра", "Partner staff"),
    "d.cat.supported": ("Әлеуметтік қолдау", "Льготная категория", "Supported group"),
    "d.payment": ("Төлем қабылдау", "Приём оплаты", "Take a payment"),
    "d.pay.amount": ("Сомасы, ₸", "Сумма, ₸", "Amount, ₸"),
    "d.pay.kind": ("Түрі", "Вид", "For"),
    "d.pay.fee": ("Айыппұл не қарыз", "Штраф или долг", "A fee owed"),
    "d.pay.service": ("Қызмет", "Услуга", "A service"),
    "d.pay.desc": ("Сипаттамасы", "Описание", "Description"),
    "d.pay.submit": ("Төлемді қабылдау", "Принять оплату", "Take payment"),
    "d.ok.payment": ("Төлем қабылданды: {amount} — {card}", "Оплата принята: {amount} — {card}",
                     "Payment taken: {amount} from {card}"),
    "d.bad.amount": ("Соманы теңгемен енгізіңіз, мысалы 500 немесе 150.50.",
                     "Введите сумму в тенге, например 500 или 150.50.",
                     "Enter an amount in tenge, e.g. 500 or 150.50."),
    "d.journal": ("Осы түйіннің соңғы әрекеттері", "Последние действия на этом узле",
                  "Latest at this node"),
    "j.loan.checkout": ("Берілді", "Выдано", "Checked out"),
    "j.loan.return": ("Қабылданды", "Принято", "Checked in"),
    "j.loan.renew": ("Ұзартылды", "Продлено", "Renewed"),
    "j.hold.picked_up": ("Бронь бойынша берілді", "Выдано по брони", "Hold handed out"),
    "j.fee.paid": ("Төлем", "Оплата", "Payment"),
    "j.reader.registered": ("Жаңа оқырман", "Новый читатель", "New reader"),
    "j.sent": ("бұлтқа жетті", "в облаке", "in the cloud"),
    "j.waiting": ("жіберуді күтуде", "ждёт отправки", "waiting to send"),
    "d.branch_only": ("Бұл — автомат түйіні: кітапты автомат береді.",
                      "Это узел автомата: книги выдаёт автомат.",
                      "This is a machine node: books are lent by the machine."),
}

_INDEX = {lang: i for i, lang in enumerate(LANGS)}


def register(rows: dict[str, tuple[str, str, str]]) -> None:
    """Add a module's rows (a key defined twice is a mistake worth failing on)."""
    twice = set(rows) & set(_ROWS)
    if twice:
        raise ValueError(f"strings defined twice: {sorted(twice)}")
    _ROWS.update(rows)


def t(key: str, lang: str = DEFAULT, **params: Any) -> str:
    """The string ``key`` in ``lang`` with ``{name}`` placeholders filled; the key if unknown."""
    row = _ROWS.get(key)
    text = row[_INDEX.get(lang, 0)] if row else key
    for name, value in params.items():
        text = text.replace("{" + name + "}", str(value))
    return text


def strings(lang: str, prefixes: tuple[str, ...] = ()) -> dict[str, str]:
    """Every string in ``lang`` whose key starts with one of ``prefixes`` (all if none)."""
    i = _INDEX.get(lang, 0)
    return {k: row[i] for k, row in _ROWS.items() if not prefixes or k.startswith(prefixes)}


def pick(*, accept_header: bool = True, default: str = DEFAULT) -> str:
    """This request's language: ?lang=, then the cookie, then Accept-Language, then default."""
    for candidate in (request.args.get("lang"), request.cookies.get(COOKIE)):
        if candidate in LANGS:
            return candidate
    if accept_header:
        best = request.accept_languages.best_match(LANGS)
        if best:
            return best
    return default


def remember(response: Response, lang: str) -> Response:
    """Keep a language chosen with ?lang= in the cookie."""
    if request.args.get("lang") == lang:
        response.set_cookie(COOKIE, lang, max_age=COOKIE_MAX_AGE, samesite="Lax",
                            httponly=True)
    return response


from edge import service_words  # noqa: E402, F401 - the services pages' rows
