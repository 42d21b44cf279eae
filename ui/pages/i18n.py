"""UI strings of the HTML pages, zh first, English beside.

Labels that come from an app's definitions (``{zh: ..., en: ...}``) go through
:func:`label`; the chrome of the pages (buttons, headings, messages) through
:func:`translate` with a key from :data:`STRINGS`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LANGS = ("zh", "en")

STRINGS: dict[str, tuple[str, str]] = {
    # shell
    "app_name": ("Loom", "Loom"),
    "skip": ("跳到主要内容", "Skip to content"),
    "menu": ("菜单", "Menu"),
    "main_nav": ("主导航", "Main navigation"),
    "home": ("工作台", "Home"),
    "my_tasks": ("我的任务", "My tasks"),
    "inbox": ("消息", "Inbox"),
    "sign_in": ("登录", "Sign in"),
    "sign_out": ("退出登录", "Sign out"),
    "sign_out_confirm": ("确定退出登录吗？", "Sign out now?"),
    "username": ("用户名", "User name"),
    "password": ("密码", "Password"),
    "language": ("语言", "Language"),
    "admin": ("系统管理", "Administration"),
    "studio": ("应用设计器", "Studio"),
    "apps": ("应用", "Apps"),
    "users": ("用户", "Users"),
    "outbox": ("消息发件箱", "Outbox"),
    "timers": ("定时任务", "Timers"),
    "audit": ("审计日志", "Audit log"),
    "choose_app": ("选择应用", "Choose an app"),
    "no_apps": ("还没有安装应用。", "No app is installed yet."),
    "signed_in_as": ("当前用户", "Signed in as"),
    "roles": ("角色", "Roles"),
    # errors
    "not_found": ("页面不存在", "Page not found"),
    "not_found_detail": ("您要找的内容不存在，或者您没有查看权限。", "What you are looking for does not exist, or you may not see it."),
    "forbidden": ("没有权限", "Not allowed"),
    "forbidden_detail": ("您没有执行此操作的权限。如需开通，请联系管理员。", "You are not allowed to do this. Ask an administrator if you need it."),
    "bad_request": ("请求有误", "Something is not right"),
    "server_error": ("服务器出错了", "Something went wrong"),
    "server_error_detail": ("出错信息已记录，请稍后重试或联系管理员。", "It has been logged; please try again or contact your administrator."),
    "csrf": ("页面已过期", "This page has expired"),
    "csrf_detail": ("为了安全，请刷新页面后重试。", "For your safety, reload the page and try again."),
    "back_home": ("返回工作台", "Back to home"),
    "sign_in_failed": ("登录失败", "Sign-in failed"),
    # lists
    "search": ("搜索", "Search"),
    "search_placeholder": ("输入关键字搜索…", "Search…"),
    "filter": ("筛选", "Filter"),
    "apply": ("查询", "Apply"),
    "reset": ("重置", "Reset"),
    "all": ("全部", "All"),
    "yes": ("是", "Yes"),
    "no": ("否", "No"),
    "new": ("新建", "New"),
    "edit": ("编辑", "Edit"),
    "delete": ("删除", "Delete"),
    "delete_confirm": ("删除后无法恢复，确定删除？", "This cannot be undone. Delete?"),
    "deleted": ("已删除", "Deleted"),
    "save": ("保存", "Save"),
    "saved": ("已保存", "Saved"),
    "cancel": ("取消", "Cancel"),
    "columns": ("显示列", "Columns"),
    "export_csv": ("导出 CSV", "Export CSV"),
    "export_xlsx": ("导出 Excel", "Export Excel"),
    "total_n": ("共 {n} 条", "{n} records"),
    "empty_list": ("没有符合条件的记录", "No records match"),
    "prev": ("上一页", "Previous"),
    "next": ("下一页", "Next"),
    "pagination": ("分页", "Pagination"),
    "page_size": ("每页条数", "Rows per page"),
    "per_page": ("{n} 条/页", "{n} / page"),
    "from": ("从", "From"),
    "to": ("至", "To"),
    "min": ("最小", "Min"),
    "max": ("最大", "Max"),
    "view": ("查看", "View"),
    # detail / form
    "details": ("详细信息", "Details"),
    "timeline": ("动态", "Timeline"),
    "no_history": ("暂无动态", "Nothing yet"),
    "actions": ("操作", "Actions"),
    "comment": ("备注意见", "Comment"),
    "comment_required": ("需要填写备注意见", "needs a comment"),
    "required": ("必填", "required"),
    "please_fix": ("保存失败：请修改以下 {n} 处", "Not saved: please fix {n} problem(s)"),
    "duplicates": ("可能重复", "Possible duplicates"),
    "choose": ("请选择", "Choose…"),
    "search_records": ("输入关键字查找", "Type to search"),
    "no_match": ("没有匹配的记录", "No match"),
    "tags_help": ("多个标签用逗号分隔", "Separate tags with commas"),
    "created": ("创建", "created"),
    "updated": ("修改", "changed"),
    "transition": ("流转", "moved"),
    "rule": ("规则", "rule"),
    "message": ("消息", "message"),
    "task": ("任务", "task"),
    "approval": ("审批", "approval"),
    "sla": ("时效", "SLA"),
    "journey": ("客户旅程", "journey"),
    "state": ("状态", "State"),
    "owner": ("负责人", "Owner"),
    "attachments": ("附件", "Attachments"),
    "child_rows": ("明细", "Lines"),
    "add_row": ("添加一行", "Add a row"),
    "remove_row": ("删除此行", "Remove row"),
    "not_editable_here": ("此字段在网页表单中为只读", "Read-only in the web form"),
    "saving": ("正在保存…", "Saving…"),
    "rating_n": ("{n} 星", "{n} stars"),
    # tasks
    "tasks_open": ("待办", "Open"),
    "tasks_overdue": ("已超期", "Overdue"),
    "tasks_due_soon": ("即将到期", "Due soon"),
    "no_tasks": ("太好了，没有待办任务", "Nothing to do"),
    "approve": ("同意", "Approve"),
    "reject": ("驳回", "Reject"),
    "transfer": ("转交", "Transfer"),
    "transfer_to": ("转交给", "Transfer to"),
    "due": ("到期", "Due"),
    "done": ("已完成", "Done"),
    "task_done": ("任务已处理", "Task done"),
    "open_record": ("打开记录", "Open record"),
    "overdue_by": ("已超期", "Overdue"),
    "approval_pending": ("审批中", "Waiting for approval"),
    "sla_breached": ("已超时", "Breached"),
    "sla_met": ("按时完成", "Met"),
    # dashboards
    "dashboard": ("看板", "Dashboard"),
    "refresh": ("刷新", "Refresh"),
    "report_unavailable": ("报表暂不可用", "This report is not available"),
    "key_numbers": ("关键指标", "Key numbers"),
    "my_records": ("我的记录", "My records"),
    # admin
    "installed_apps": ("已安装的应用", "Installed apps"),
    "version": ("版本", "Version"),
    "versions": ("历史版本", "Versions"),
    "installed_at": ("安装时间", "Installed"),
    "installed_by": ("安装人", "By"),
    "upload_package": ("上传应用包（.zip）", "Upload a package (.zip)"),
    "check_package": ("检查", "Check"),
    "validation_failed": ("应用包有 {n} 处问题，未安装", "The package has {n} problem(s); nothing was installed"),
    "migration_plan": ("迁移计划", "Migration plan"),
    "confirm_install": ("确认安装", "Install"),
    "allow_drop": ("允许删除数据（删除字段/表）", "Allow deleting data (dropped fields/tables)"),
    "export": ("导出", "Export"),
    "rollback": ("回滚到上一版本", "Roll back to the previous version"),
    "rollback_to": ("回滚到 {v}", "Roll back to {v}"),
    "no_previous": ("没有可回滚的历史版本", "No previous version to roll back to"),
    "installed_ok": ("安装完成", "Installed"),
    "create_user": ("新建用户", "New user"),
    "display_name": ("显示名称", "Display name"),
    "attributes": ("属性", "Attributes"),
    "attributes_help": ("每行一个，如 dealer=D001", "One per line, e.g. dealer=D001"),
    "active": ("启用", "Active"),
    "inactive": ("已停用", "Deactivated"),
    "deactivate": ("停用", "Deactivate"),
    "activate": ("启用", "Activate"),
    "new_password": ("新密码（留空不修改）", "New password (blank: unchanged)"),
    "status": ("状态", "Status"),
    "retry": ("重试", "Retry"),
    "recipient": ("接收人", "Recipient"),
    "channel": ("渠道", "Channel"),
    "template": ("模板", "Template"),
    "last_error": ("最近错误", "Last error"),
    "due_at": ("到期时间", "Due"),
    "kind": ("类型", "Kind"),
    "key": ("键", "Key"),
    "actor": ("操作人", "Actor"),
    "action": ("动作", "Action"),
    "at": ("时间", "At"),
    "app": ("应用", "App"),
    "form": ("表单", "Form"),
    "record": ("记录", "Record"),
    "details_col": ("详情", "Details"),
    "nothing": ("暂无数据", "Nothing here"),
    # studio
    "files": ("文件", "Files"),
    "problems": ("问题", "Problems"),
    "no_problems": ("没有发现问题", "No problems"),
    "checking": ("正在检查…", "Checking…"),
    "preview": ("预览", "Preview"),
    "plan": ("迁移计划", "Migration plan"),
    "publish": ("发布新版本", "Publish a new version"),
    "publish_confirm": ("发布后立即生效，确定发布？", "Publishing takes effect at once. Publish?"),
    "published": ("已发布 {v}", "Published {v}"),
    "preview_only_forms": ("只能预览表单文件（forms/*.yaml）", "Only form files (forms/*.yaml) can be previewed"),
    "cannot_preview": ("有错误，无法预览", "Fix the problems to preview"),
}


def translate(key: str, lang: str, **kw: Any) -> str:
    pair = STRINGS.get(key)
    if pair is None:
        return key
    s = pair[1] if lang == "en" else pair[0]
    return s.format(**kw) if kw else s


def label(value: Any, lang: str, default: str = "") -> str:
    """A definition label (string or ``{zh, en}``) in ``lang``."""
    if value is None:
        return default
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        other = "zh" if lang == "en" else "en"
        return str(value.get(lang) or value.get(other) or default)
    return str(value)
